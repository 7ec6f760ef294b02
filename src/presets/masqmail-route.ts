// Converting masqmail route files (masqmail.route(5)) and get files (masqmail.get(5)) into
// tidemail route files with [[fetch]] accounts.

import path from 'node:path';
import { TomlText, type PlannedFile, type TomlValue } from './writer.js';
import { at, bareAddress, flag, converted, mapVariables, masqList, notConverted, parseMasqFile, splitCommand, type Accounting, type MasqEntry } from './masqmail-parse.js';
/** How the online state of a named route was detected in masqmail. */
export type OnlineMethod =
  | { kind: 'file'; file: string }
  | { kind: 'pipe'; command: string }
  | { kind: 'none' };

/** A POP3 account from a get file (masqmail.get(5)). */
export interface GetAccount {
  server: string;
  tls: 'implicit' | 'starttls';
  user?: string;
  password?: string;
  auth: 'user' | 'apop';
  deliverTo?: string;
  keep: boolean;
  maxSize?: string;
  file: string;
}

export function convertGetFile(file: string, acc: Accounting, target: string): GetAccount | null {
  let entries: MasqEntry[];
  try {
    entries = parseMasqFile(file);
  } catch (err) {
    acc.report.errors.push(`get file: ${(err as Error).message}`);
    return null;
  }
  let host = '';
  let port = 110;
  let tls: GetAccount['tls'] = 'starttls';
  const g: GetAccount = { server: '', tls, auth: 'user', keep: false, file };
  for (const e of entries) {
    switch (e.key) {
      case 'protocol':
        if (e.value === 'pop3' || e.value === 'apop') {
          g.auth = e.value === 'apop' ? 'apop' : 'user';
          converted(acc, e, e.value === 'apop' ? 'auth = "apop"' : '(POP3)');
        } else notConverted(acc, e, `protocol "${e.value}" is not POP3`, target);
        break;
      case 'server':
        host = e.value;
        converted(acc, e, 'server');
        break;
      case 'port':
        port = Number(e.value);
        converted(acc, e, 'server (port)');
        break;
      case 'user':
        g.user = e.value;
        converted(acc, e, 'user');
        break;
      case 'pass':
        g.password = e.value;
        converted(acc, e, 'password_file (0600)');
        break;
      case 'address':
        g.deliverTo = e.value;
        converted(acc, e, 'deliver_to');
        break;
      case 'do_keep':
        g.keep = flag(acc, e);
        converted(acc, e, 'keep');
        break;
      case 'do_uidl':
      case 'do_uidl_dele':
        flag(acc, e);
        converted(acc, e, '(tidemail always keeps a UIDL list and deletes only after the message is queued)');
        break;
      case 'max_size':
        if (Number(e.value) > 0) g.maxSize = e.value;
        converted(acc, e, 'max_size');
        break;
      case 'wrapper': {
        // The documented use: TLS through openssl s_client / gnutls-cli. tidemail does TLS itself.
        const m = /-connect\s+(\S+):(\d+)/.exec(e.value) ?? /gnutls-cli\b.*?\s([A-Za-z0-9.-]+)\s+-p\s*(\d+)/.exec(e.value);
        if (m && !/starttls/.test(e.value)) {
          host = m[1]!;
          port = Number(m[2]);
          tls = 'implicit';
          converted(acc, e, `server = "${host}:${port}" with tls = "implicit" (tidemail speaks TLS itself)`);
        } else notConverted(acc, e, 'a POP3 wrapper other than a TLS tunnel has no equivalent', target);
        break;
      }
      case 'return_path':
        notConverted(acc, e, 'fetched mail keeps the null sender in tidemail (it was delivered once already; bounces must not go back)', target);
        break;
      case 'resolve_list':
        converted(acc, e, '(not needed: the server name is resolved normally)');
        break;
      default:
        notConverted(acc, e, unknownKey('masqmail.get(5)'), target, true);
    }
  }
  if (!host) {
    acc.report.notes.push(`${file}: no server, so no [[fetch]] entry was made`);
    return null;
  }
  if (tls === 'starttls') {
    acc.report.notes.push(`${file}: masqmail fetched from ${host}:${port} without TLS; tidemail asks for STLS (tls = "starttls") and verifies the certificate — if the server cannot, use its port 995 (tls = "implicit"), or as a last resort tls = "none"`);
  }
  g.server = `${host}:${port}`;
  g.tls = tls;
  return g;
}

export const unknownKey = (page: string) => `not a setting of ${page} that tidemail knows; check the spelling, or carry it over by hand`;

export interface RouteOut {
  name: string;
  text: TomlText;
  priority?: number;
  secrets: PlannedFile[];
  fetch: GetAccount[];
}

/** Converts one masqmail route file into a tidemail route. */
export function convertRouteFile(file: string, name: string, outDir: string, acc: Accounting, online: (t: TomlText) => void, priority: number | undefined): RouteOut {
  const target = `routes/${name}.toml`;
  const entries = parseMasqFile(file);
  const t = new TomlText().comment(`Converted from ${file} by \`tidemail import-masqmail\`.`).blank();
  const get = (k: string) => entries.find((e) => e.key === k);
  const problems: string[] = [];
  const secrets: PlannedFile[] = [];
  const criteria = { senders: [] as string[], notSenders: [] as string[], recipients: [] as string[], notRecipients: [] as string[] };
  const rewrite = { envelope: undefined as string | undefined, header: undefined as string | undefined, map: {} as Record<string, string>, mapSource: {} as Record<string, string> };
  const body: [string | string[], TomlValue, string?][] = [];
  const wrapper = get('wrapper');
  const pipe = get('pipe');
  const mailHost = get('mail_host');
  const protocol = get('protocol')?.value ?? (pipe ? 'pipe' : 'smtp');
  const smtpPort = get('smtp_port')?.value;

  // The kind of route first: pipe, smarthost (possibly through a TLS wrapper), wrapper, or direct MX.
  let kind: 'pipe' | 'smarthost' | 'wrapper' | 'mx' = 'mx';
  if (protocol === 'pipe' && pipe) kind = 'pipe';
  else if (wrapper) {
    const w = wrapper.value;
    const tlsTunnel = /-connect\s+([A-Za-z0-9.-]+):(\d+)/.exec(w) ?? /gnutls-cli\b.*?\s([A-Za-z0-9.-]+)\s+-p\s*(\d+)/.exec(w);
    if (tlsTunnel) {
      kind = 'smarthost';
      const starttls = /starttls/.test(w);
      body.push(['smarthost', `${tlsTunnel[1]}:${tlsTunnel[2]}`], ['tls', starttls ? 'starttls' : 'implicit', 'tidemail speaks TLS itself and verifies the certificate']);
      converted(acc, wrapper, `smarthost = "${tlsTunnel[1]}:${tlsTunnel[2]}", tls = "${starttls ? 'starttls' : 'implicit'}" (no wrapper needed)`);
      if (mailHost) converted(acc, mailHost, '(replaced by the wrapper\'s server)');
    } else {
      kind = 'wrapper';
      const argv = splitCommand(w.replace(/\s2>\s*\/dev\/null/g, ''));
      body.push(['kind', 'wrapper'], ['wrapper', argv]);
      converted(acc, wrapper, 'wrapper');
      if (mailHost) notConverted(acc, mailHost, 'the wrapper decides where SMTP goes', target);
    }
  } else if (mailHost) {
    kind = 'smarthost';
    const [h, p] = mailHost.value.split(':');
    const port = p ?? smtpPort ?? '25';
    body.push(['smarthost', `${h}:${port}`], ['tls', 'starttls', 'masqmail spoke plain SMTP; tidemail asks for STARTTLS and verifies the certificate']);
    converted(acc, mailHost, 'smarthost');
    acc.report.notes.push(`${target}: masqmail sent to ${h}:${port} without TLS; tidemail asks for STARTTLS there — if the server cannot, set tls = "none" (only on a network you trust)`);
  } else if (kind === 'mx') {
    body.push(['kind', 'mx']);
    if (smtpPort) body.push(['port', Number(smtpPort)]);
  }
  if (protocol === 'pipe' && !pipe) acc.report.notes.push(`${target}: protocol = "pipe" without a pipe command; made a direct MX route instead`);

  for (const e of entries) {
    const list = (files = true) => masqList(e, files, problems);
    switch (e.key) {
      case 'protocol':
        if (e.value === 'smtp' || (e.value === 'pipe' && pipe)) converted(acc, e, e.value === 'pipe' ? 'kind = "pipe"' : '(SMTP)');
        else notConverted(acc, e, `protocol "${e.value}" is neither smtp nor pipe`, target);
        break;
      case 'mail_host':
      case 'wrapper':
        break; // handled above
      case 'smtp_port':
        converted(acc, e, kind === 'mx' ? 'port' : 'smarthost (port)');
        break;
      case 'pipe': {
        if (kind !== 'pipe') {
          notConverted(acc, e, 'a pipe command without protocol = "pipe" is not used by masqmail either', target);
          break;
        }
        // uux wants "(${rcpt})" so the address is not taken for a file; tidemail passes each
        // recipient as its own argument, which uux takes as it is.
        const argv = splitCommand(e.value).map((a) => a.replace(/^\((\$\{rcpt\}|\$rcpt)\)$/, '$1')).map(mapVariables);
        if (argv.some((a) => a === null)) {
          notConverted(acc, e, 'uses a variable other than ${return_path}, ${rcpt} or ${rcpt_local} (tidemail has {sender} and {recipients})', target);
          body.push(['kind', 'local-only']);
        } else {
          body.push(['pipe', argv as string[]]);
          converted(acc, e, 'pipe (kind = "pipe"; ${return_path} → {sender}, ${rcpt} → {recipients})');
        }
        break;
      }
      case 'allowed_mail_locals':
      case 'allowed_return_paths':
      case 'allowed_senders':
      case 'not_allowed_mail_locals':
      case 'not_allowed_return_paths':
      case 'denied_senders': {
        const neg = e.key.startsWith('not_') || e.key.startsWith('denied_');
        const items = list();
        const nullSender = items.filter((x) => x === '<>');
        const rest = items.filter((x) => x !== '<>');
        // A bare word is a local part in both programs; masqmail's "*@*example.org" keeps working as a glob.
        (neg ? criteria.notSenders : criteria.senders).push(...rest);
        if (nullSender.length) notConverted(acc, { ...e, value: '<>' }, 'tidemail routes cannot match the null sender "<>"', target);
        converted(acc, e, neg ? 'not_senders' : 'senders');
        break;
      }
      case 'allowed_rcpt_domains':
      case 'not_allowed_rcpt_domains': {
        const neg = e.key.startsWith('not_');
        // A pattern without @ is a domain in tidemail, as these were in masqmail.
        (neg ? criteria.notRecipients : criteria.recipients).push(...list().map((d) => (d.includes('.') || d.includes('*') ? d : `*@${d}`)));
        converted(acc, e, neg ? 'not_recipients' : 'recipients');
        break;
      }
      case 'allowed_recipients':
      case 'denied_recipients': {
        const neg = e.key.startsWith('denied_');
        const items = list();
        (neg ? criteria.notRecipients : criteria.recipients).push(...items);
        if (items.some((x) => !x.includes('@'))) acc.report.notes.push(`${at(e)} ${e.key}: entries without @ match the domain in tidemail (e.g. "example.org"), a bare word the local part`);
        converted(acc, e, neg ? 'not_recipients' : 'recipients');
        break;
      }
      case 'allowed_from_hdrs':
      case 'denied_from_hdrs':
        notConverted(acc, e, 'tidemail chooses routes by envelope sender and recipient, not by the From: header (use senders / not_senders)', target);
        break;
      case 'map_return_path_addresses':
      case 'map_h_from_addresses': {
        const envelope = e.key === 'map_return_path_addresses';
        for (const pair of list()) {
          const colon = pair.indexOf(':');
          if (colon < 0) {
            notConverted(acc, { ...e, value: pair }, 'not "localpart: address"', target);
            continue;
          }
          const key = pair.slice(0, colon).trim().toLowerCase();
          const addr = bareAddress(pair.slice(colon + 1));
          if (addr.startsWith('*@')) {
            if (/[*?]/.test(key)) {
              notConverted(acc, { ...e, value: pair }, 'rewriting only the domain of every local part has no tidemail equivalent; add rewrite.map.USER = "USER@domain" per user', target);
              continue;
            }
            rewrite.map[key] = `${key}${addr.slice(1)}`;
          } else if (key === '*') {
            if (envelope) rewrite.envelope = addr;
            else rewrite.header = addr;
          } else if (/[*?]/.test(key)) {
            notConverted(acc, { ...e, value: pair }, 'rewrite.map keys are local parts, not patterns', target);
            continue;
          } else if (rewrite.map[key] && rewrite.map[key] !== addr) {
            notConverted(acc, { ...e, value: pair }, `conflicts with ${rewrite.mapSource[key]} (tidemail's rewrite.map sets envelope and header alike); kept ${rewrite.map[key]}`, target);
            continue;
          } else {
            rewrite.map[key] = addr;
            rewrite.mapSource[key] = e.key;
          }
        }
        if (!envelope && /<[^>]*>/.test(e.value) && /\S\s*</.test(e.value)) acc.report.notes.push(`${at(e)} ${e.key}: display names are not rewritten by tidemail; the From: keeps the name the mail program wrote`);
        converted(acc, e, envelope ? 'rewrite.map / rewrite.envelope_from (envelope and headers alike in tidemail)' : 'rewrite.map / rewrite.header_from (envelope and headers alike in tidemail)');
        break;
      }
      case 'map_h_reply_to_addresses':
        converted(acc, e, '(tidemail rewrites Reply-To: with the same rewrite.map as From:)');
        break;
      case 'map_h_mail_followup_to_addresses':
        notConverted(acc, e, 'tidemail rewrites From:, Sender: and Reply-To: only', target);
        break;
      case 'set_h_from_domain':
      case 'set_h_reply_to_domain':
      case 'set_return_path_domain':
        notConverted(acc, e, `changing only the domain of every local sender has no tidemail equivalent; add rewrite.map.USER = "USER@${e.value}" for each local user (or rewrite.${e.key === 'set_return_path_domain' ? 'envelope_from' : 'header_from'} = "you@${e.value}" for all)`, target);
        break;
      case 'expand_h_sender_address':
      case 'expand_h_sender_domain':
        flag(acc, e);
        converted(acc, e, '(tidemail rewrites a local Sender: header together with From:)');
        break;
      case 'auth_login':
        body.push([['auth', 'user'], e.value]);
        converted(acc, e, 'auth.user');
        break;
      case 'auth_secret': {
        const file = path.join(outDir, 'secrets', name);
        secrets.push({ path: file, content: `${e.value}\n`, secret: true });
        body.push([['auth', 'password_file'], file, 'mode 0600']);
        converted(acc, e, `auth.password_file (${file}, mode 0600)`);
        break;
      }
      case 'auth_name':
        converted(acc, e, '(tidemail picks the best mechanism the server offers, only inside TLS)');
        break;
      case 'pop3_login': {
        const g = convertGetFile(e.value, acc, target);
        if (g?.user && g.password) {
          const file = path.join(outDir, 'secrets', `${name}-pop`);
          secrets.push({ path: file, content: `${g.password}\n`, secret: true });
          body.push([['pop_before_smtp', 'server'], g.server], [['pop_before_smtp', 'tls'], g.tls], [['pop_before_smtp', 'user'], g.user], [['pop_before_smtp', 'password_file'], file]);
          converted(acc, e, 'pop_before_smtp.*');
        } else notConverted(acc, e, `the get file ${e.value} has no server, user or pass`, target);
        break;
      }
      case 'helo_name':
        body.push(['helo_name', e.value]);
        converted(acc, e, 'helo_name');
        break;
      case 'do_correct_helo':
        if (flag(acc, e)) notConverted(acc, e, 'tidemail says its hostname (or helo_name); set helo_name to the public name', target);
        else converted(acc, e, '(off: the default)');
        break;
      case 'instant_helo':
        if (flag(acc, e)) converted(acc, e, '(only needed for STARTTLS wrappers, which tidemail replaces)');
        else converted(acc, e, '(off: the default)');
        break;
      case 'do_pipelining':
        if (flag(acc, e)) converted(acc, e, '(tidemail pipelines when the server offers it)');
        else notConverted(acc, e, 'tidemail always uses PIPELINING when the server offers it', target);
        break;
      case 'resolve_list':
        converted(acc, e, '(not needed: smarthosts are resolved by name, MX routes by DNS)');
        break;
      case 'connect_error_fail':
        if (flag(acc, e)) notConverted(acc, e, 'tidemail never bounces for a failed connection; the message waits until max_lifetime', target);
        else converted(acc, e, '(the tidemail behaviour: connection errors defer)');
        break;
      case 'last_route':
        if (flag(acc, e)) notConverted(acc, e, 'tidemail tries the first matching online route; a message that fails there is retried on whichever matching route is online next time — narrow the other routes\' criteria to keep it on this one', target);
        else converted(acc, e, '(off: the default)');
        break;
      case 'pipe_fromline':
      case 'pipe_fromhack':
        if (flag(acc, e)) notConverted(acc, e, 'tidemail pipes the message without a "From " line; use a wrapper script that adds it', target);
        else converted(acc, e, '(off: the default)');
        break;
      default:
        notConverted(acc, e, unknownKey('masqmail.route(5)'), target, true);
    }
  }
  for (const p of problems) acc.report.errors.push(p);

  if (priority !== undefined) t.set('priority', priority);
  for (const [k, v, c] of body) t.set(k, v, c);
  if (criteria.senders.length) t.set('senders', criteria.senders);
  if (criteria.notSenders.length) t.set('not_senders', criteria.notSenders);
  if (criteria.recipients.length) t.set('recipients', criteria.recipients);
  if (criteria.notRecipients.length) t.set('not_recipients', criteria.notRecipients);
  if (rewrite.envelope) t.set(['rewrite', 'envelope_from'], rewrite.envelope);
  if (rewrite.header) t.set(['rewrite', 'header_from'], rewrite.header);
  for (const [k, v] of Object.entries(rewrite.map)) t.set(['rewrite', 'map', k], v);
  online(t);
  return { name, text: t, priority, secrets, fetch: [] };
}
