// Converting a masqmail configuration (masqmail.conf(5), masqmail.route(5), masqmail.get(5);
// versions 0.2 and 0.3) into tidemail's tidemail.toml + routes/*.toml + secrets.
//
// Every key read is accounted for: converted (and to what), or listed as not converted with the
// reason — a key we do not know is never dropped silently. The not-converted ones are also left
// as comments in the file they would have gone to, so the next person reading it sees them.

import fs from 'node:fs';
import path from 'node:path';
import { parseDuration, parseSize, formatDuration } from '../config/units.js';
import { TomlText, type PlannedFile, type TomlValue } from './writer.js';

/** One `key = value` of a masqmail file. */
export interface MasqEntry {
  key: string;
  value: string;
  file: string;
  line: number;
}

export interface ImportReport {
  converted: { at: string; key: string; to: string }[];
  notConverted: { at: string; key: string; value: string; reason: string }[];
  notes: string[];
}

export interface ImportResult {
  files: PlannedFile[];
  report: ImportReport;
}

/** Parses masqmail's `key = value` format: "quoted" values may span lines and escape \" ; # starts a comment line. */
export function parseMasqFile(file: string): MasqEntry[] {
  const text = fs.readFileSync(file, 'utf8');
  const entries: MasqEntry[] = [];
  let i = 0;
  let line = 1;
  const n = text.length;
  while (i < n) {
    // Skip blank space and comment lines.
    const c = text[i]!;
    if (c === '\n') {
      line++;
      i++;
      continue;
    }
    if (c === ' ' || c === '\t' || c === '\r') {
      i++;
      continue;
    }
    if (c === '#') {
      while (i < n && text[i] !== '\n') i++;
      continue;
    }
    const startLine = line;
    const eol = text.indexOf('\n', i) < 0 ? n : text.indexOf('\n', i);
    const eq = text.indexOf('=', i);
    if (eq < 0 || eq > eol) throw new Error(`${file}:${startLine}: expected "key = value", found "${text.slice(i, eol).trim()}"`);
    const key = text.slice(i, eq).trim();
    if (!/^[A-Za-z0-9_.-]+$/.test(key)) throw new Error(`${file}:${startLine}: "${key}" is not a masqmail setting name`);
    i = eq + 1;
    while (i < n && (text[i] === ' ' || text[i] === '\t')) i++;
    let value = '';
    if (text[i] === '"') {
      i++;
      for (;;) {
        if (i >= n) throw new Error(`${file}:${startLine}: the quoted value of ${key} is not closed with "`);
        const ch = text[i]!;
        if (ch === '\\' && i + 1 < n) {
          value += text[i + 1];
          if (text[i + 1] === '\n') line++;
          i += 2;
          continue;
        }
        if (ch === '"') {
          i++;
          break;
        }
        if (ch === '\n') line++;
        value += ch;
        i++;
      }
      // Anything after the closing quote on that line is ignored, as masqmail does.
      while (i < n && text[i] !== '\n') i++;
    } else {
      const end = text.indexOf('\n', i) < 0 ? n : text.indexOf('\n', i);
      value = text.slice(i, end).trim();
      i = end;
    }
    entries.push({ key, value, file, line: startLine });
  }
  return entries;
}

const at = (e: MasqEntry) => `${path.basename(e.file)}:${e.line}`;

/** A ';' list; entries starting with '/' are files of one entry per line (where `files` is true). */
function masqList(e: MasqEntry, files: boolean, problems: string[]): string[] {
  const out: string[] = [];
  for (const raw of e.value.split(';')) {
    const item = raw.trim();
    if (!item) continue;
    if (files && item.startsWith('/')) {
      try {
        for (const l of fs.readFileSync(item, 'utf8').split('\n')) if (l.trim() && !l.trim().startsWith('#')) out.push(l.trim());
      } catch (err) {
        problems.push(`${at(e)} ${e.key}: cannot read the included file ${item} (${(err as NodeJS.ErrnoException).code})`);
      }
      continue;
    }
    out.push(item);
  }
  return out;
}

const bool = (v: string) => /^(on|yes|true)$/i.test(v.trim());

/** masqmail's "1h" / "4d" / plain seconds, as a tidemail duration; null if not one. */
function duration(v: string): string | null {
  const ms = parseDuration(v.trim());
  return ms === null ? null : formatDuration(ms);
}

/** The address in "John Smith <jsmith@x>" or "<jsmith@x>" or "jsmith@x". */
function bareAddress(v: string): string {
  const m = /<([^>]*)>/.exec(v);
  return (m ? m[1]! : v).trim();
}

/** Splits a shell-ish command line into argv (quotes honoured, no expansion). */
function splitCommand(cmd: string): string[] {
  const out: string[] = [];
  const re = /"((?:\\.|[^"\\])*)"|'([^']*)'|(\S+)/g;
  for (const m of cmd.matchAll(re)) out.push(m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : (m[2] ?? m[3]!));
  return out;
}

/** masqmail's ${var} / $var in pipe and mda commands → tidemail's placeholders; null when one has none. */
function mapVariables(arg: string): string | null {
  const table: Record<string, string> = { return_path: '{sender}', rcpt_local: '{user}', rcpt: '{recipients}' };
  let ok = true;
  const out = arg.replace(/\$\{(\w+)\}|\$(\w+)/g, (_m, a: string | undefined, b: string | undefined) => {
    const v = table[(a ?? b)!];
    if (!v) ok = false;
    return v ?? '';
  });
  return ok ? out : null;
}

interface Accounting {
  report: ImportReport;
  /** Comments for not-converted keys, per output file. */
  leftovers: Map<string, string[]>;
}

function converted(acc: Accounting, e: MasqEntry, to: string): void {
  acc.report.converted.push({ at: at(e), key: e.key, to });
}

function notConverted(acc: Accounting, e: MasqEntry, reason: string, target: string): void {
  acc.report.notConverted.push({ at: at(e), key: e.key, value: e.value, reason });
  const list = acc.leftovers.get(target) ?? [];
  list.push(`masqmail ${at(e)}: ${e.key} = ${JSON.stringify(e.value)} — not converted: ${reason}`);
  acc.leftovers.set(target, list);
}

/** How the online state of a named route was detected in masqmail. */
type OnlineMethod =
  | { kind: 'file'; file: string }
  | { kind: 'pipe'; command: string }
  | { kind: 'none' };

/** A POP3 account from a get file (masqmail.get(5)). */
interface GetAccount {
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

function convertGetFile(file: string, acc: Accounting, target: string): GetAccount | null {
  let entries: MasqEntry[];
  try {
    entries = parseMasqFile(file);
  } catch (err) {
    acc.report.notes.push(`cannot read the get file ${file}: ${(err as Error).message}`);
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
        g.keep = bool(e.value);
        converted(acc, e, 'keep');
        break;
      case 'do_uidl':
      case 'do_uidl_dele':
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
        notConverted(acc, e, unknownKey('masqmail.get(5)'), target);
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

const unknownKey = (page: string) => `not a setting of ${page} that tidemail knows; check the spelling, or carry it over by hand`;

interface RouteOut {
  name: string;
  text: TomlText;
  priority?: number;
  secrets: PlannedFile[];
  fetch: GetAccount[];
}

/** Converts one masqmail route file into a tidemail route. */
function convertRouteFile(file: string, name: string, outDir: string, acc: Accounting, online: (t: TomlText) => void, priority: number | undefined): RouteOut {
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
  if (protocol === 'pipe' && !pipe) problems.push(`${target}: protocol = "pipe" without a pipe command; made a direct MX route instead`);

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
        if (bool(e.value)) notConverted(acc, e, 'tidemail says its hostname (or helo_name); set helo_name to the public name', target);
        else converted(acc, e, '(off: the default)');
        break;
      case 'instant_helo':
        if (bool(e.value)) converted(acc, e, '(only needed for STARTTLS wrappers, which tidemail replaces)');
        else converted(acc, e, '(off: the default)');
        break;
      case 'do_pipelining':
        if (bool(e.value)) converted(acc, e, '(tidemail pipelines when the server offers it)');
        else notConverted(acc, e, 'tidemail always uses PIPELINING when the server offers it', target);
        break;
      case 'resolve_list':
        converted(acc, e, '(not needed: smarthosts are resolved by name, MX routes by DNS)');
        break;
      case 'connect_error_fail':
        if (bool(e.value)) notConverted(acc, e, 'tidemail never bounces for a failed connection; the message waits until max_lifetime', target);
        else converted(acc, e, '(the tidemail behaviour: connection errors defer)');
        break;
      case 'last_route':
        if (bool(e.value)) notConverted(acc, e, 'tidemail tries the first matching online route; a message that fails there is retried on whichever matching route is online next time — narrow the other routes\' criteria to keep it on this one', target);
        else converted(acc, e, '(off: the default)');
        break;
      case 'pipe_fromline':
      case 'pipe_fromhack':
        if (bool(e.value)) notConverted(acc, e, 'tidemail pipes the message without a "From " line; use a wrapper script that adds it', target);
        else converted(acc, e, '(off: the default)');
        break;
      default:
        notConverted(acc, e, unknownKey('masqmail.route(5)'), target);
    }
  }
  for (const p of problems) acc.report.notes.push(p);

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

/** The converted configuration for masqmail.conf `confFile`, to be written to `outDir`. */
export function convertMasqmail(confFile: string, outDir: string): ImportResult {
  const acc: Accounting = { report: { converted: [], notConverted: [], notes: [] }, leftovers: new Map() };
  const entries = parseMasqFile(confFile);
  const main = 'tidemail.toml';
  const problems: string[] = [];
  const top: [string | string[], TomlValue, string?][] = [];
  const smtp: [string, TomlValue, string?][] = [];
  const local: [string, TomlValue, string?][] = [];
  const queue: [string, TomlValue, string?][] = [];
  const routeFiles: { name: string; files: string[]; permanent: boolean }[] = [];
  const gets: { name: string; files: string[]; online: boolean }[] = [];
  let online: OnlineMethod = { kind: 'none' };
  let onlineFile: MasqEntry | undefined;
  let onlinePipe: MasqEntry | undefined;
  let localNets: string[] = [];
  let localNetRoute: string | undefined;

  const routeName = (s: string) => s.replace(/[^A-Za-z0-9_-]/g, '-').toLowerCase();

  for (const e of entries) {
    const list = (files = true) => masqList(e, files, problems);
    const dotted = /^(online_routes|connect_route|query_routes|get|online_gets)\.(.+)$/.exec(e.key);
    if (dotted) {
      const [, kind, name] = dotted;
      const files = list(false).filter((f) => f);
      if (kind === 'get' || kind === 'online_gets') gets.push({ name: name!, files, online: kind === 'online_gets' });
      else routeFiles.push({ name: name!, files, permanent: false });
      converted(acc, e, kind === 'get' || kind === 'online_gets' ? `[[fetch]] in routes/${routeName(name!)}.toml` : `routes/${routeName(name!)}${files.length > 1 ? '-N' : ''}.toml`);
      continue;
    }
    switch (e.key) {
      case 'host_name': {
        let h = e.value;
        if (h.startsWith('/')) {
          try {
            h = fs.readFileSync(h, 'utf8').split('\n')[0]!.trim();
          } catch (err) {
            notConverted(acc, e, `cannot read ${h} (${(err as NodeJS.ErrnoException).code})`, main);
            break;
          }
        }
        top.push(['hostname', h]);
        converted(acc, e, 'hostname');
        break;
      }
      case 'local_hosts':
        local.push(['domains', list(false).map((d) => d.toLowerCase())]);
        converted(acc, e, '[local] domains');
        break;
      case 'listen_addresses': {
        const l = list(false).map((a) => {
          const [h, p] = a.split(':');
          const host = h === 'localhost' ? '127.0.0.1' : h!;
          return `${host.includes(':') ? `[${host}]` : host}:${p ?? 25}`;
        });
        smtp.push(['listen', l]);
        converted(acc, e, '[smtp] listen');
        break;
      }
      case 'local_nets':
        localNets = list(false);
        converted(acc, e, `recipients of routes/local-net.toml`);
        break;
      case 'local_net_route':
        localNetRoute = e.value;
        converted(acc, e, 'routes/local-net.toml');
        break;
      case 'permanent_routes':
        routeFiles.push({ name: 'permanent', files: list(false), permanent: true });
        converted(acc, e, 'routes/permanent.toml (always online)');
        break;
      case 'alias_file':
        local.push(['aliases', e.value, 'run `newaliases` once to compile it for tidemail']);
        converted(acc, e, '[local] aliases');
        break;
      case 'alias_local_caseless':
      case 'caseless_matching':
        notConverted(acc, e, 'tidemail has no switch for this; aliases match as newaliases compiled them', main);
        break;
      case 'mail_dir':
        local.push(['mbox', `${e.value.replace(/\/$/, '')}/%u`]);
        converted(acc, e, '[local] mbox');
        break;
      case 'mbox_default':
        if (['mbox', 'maildir', 'mda'].includes(e.value)) {
          local.push(['delivery', e.value]);
          if (e.value === 'maildir') local.push(['maildir', '~/Maildir', 'masqmail\'s maildir location']);
          converted(acc, e, '[local] delivery');
        } else notConverted(acc, e, `"${e.value}" is not mbox, maildir or mda`, main);
        break;
      case 'mbox_users':
      case 'mda_users':
      case 'maildir_users':
        notConverted(acc, e, 'tidemail has one delivery method for all users; for exceptions deliver through an MDA (procmail, dovecot-lda) that decides per user', main);
        break;
      case 'mda': {
        const argv = splitCommand(e.value).map(mapVariables);
        if (argv.some((a) => a === null)) notConverted(acc, e, 'uses a variable tidemail does not have (it has {sender} and {user})', main);
        else {
          local.push(['mda', argv as string[]]);
          converted(acc, e, '[local] mda (${return_path} → {sender}, ${rcpt_local} → {user})');
        }
        break;
      }
      case 'mda_fromline':
      case 'mda_fromhack':
      case 'pipe_fromline':
      case 'pipe_fromhack':
        if (bool(e.value)) notConverted(acc, e, 'tidemail does not add a "From " line for MDAs or alias pipes (procmail and dovecot-lda do not need it)', main);
        else converted(acc, e, '(off: the default)');
        break;
      case 'online_detect':
        if (e.value === 'file' || e.value === 'pipe') converted(acc, e, `online.${e.value === 'file' ? 'file/command' : 'command'} of each route`);
        else notConverted(acc, e, `"${e.value}" (masqdialer) is obsolete; routes use online.file = "/run/tidemail/ROUTE.online" — create and remove that file in your ip-up/ip-down scripts, or call \`tidemail link up|down ROUTE\``, main);
        if (e.value === 'file') online = { kind: 'file', file: '' };
        if (e.value === 'pipe') online = { kind: 'pipe', command: '' };
        break;
      case 'online_file':
        onlineFile = e;
        converted(acc, e, 'online of each route');
        break;
      case 'online_pipe':
      case 'online_query':
        onlinePipe = e;
        if (e.key === 'online_query') online = { kind: 'pipe', command: '' };
        converted(acc, e, 'online.command of each route');
        break;
      case 'mserver_iface':
        notConverted(acc, e, 'masqdialer (mserver) is not supported; see online_detect', main);
        break;
      case 'max_defer_time': {
        const d = duration(e.value);
        if (d) {
          queue.push(['max_lifetime', d]);
          converted(acc, e, '[queue] max_lifetime');
        } else notConverted(acc, e, 'not a duration', main);
        break;
      }
      case 'warn_intervals': {
        const first = list(false)[0];
        const d = first ? duration(first) : null;
        if (d) {
          queue.push(['delay_warning', d, 'tidemail warns once; masqmail warned at each of its warn_intervals']);
          converted(acc, e, '[queue] delay_warning (the first interval)');
        } else notConverted(acc, e, 'not a list of durations', main);
        break;
      }
      case 'max_msg_size': {
        const size = parseSize(e.value);
        if (size === null) notConverted(acc, e, 'not a size', main);
        else if (size === 0) notConverted(acc, e, '0 means unlimited in masqmail; tidemail always has a limit (default 25M) — set [smtp] max_message_size', main);
        else {
          smtp.push(['max_message_size', size]);
          converted(acc, e, '[smtp] max_message_size');
        }
        break;
      }
      case 'log_user':
        local.push(['archive', e.value, 'a copy of every message (masqmail log_user)']);
        converted(acc, e, '[local] archive');
        break;
      case 'do_relay':
        if (bool(e.value)) acc.report.notes.push(`${at(e)} do_relay = true: tidemail relays only for [smtp] trusted_networks (loopback by default) and authenticated users — add your LAN there`);
        converted(acc, e, '[smtp] trusted_networks (relaying is closed by default)');
        break;
      case 'spool_dir':
        converted(acc, e, '(tidemail keeps its queue in state_dir; flush the masqmail queue with `masqmail -qf` before switching)');
        break;
      case 'log_dir':
      case 'use_syslog':
      case 'debug_level':
        converted(acc, e, '(tidemail logs to stderr for journald/logread; [log] level)');
        break;
      case 'run_as_user':
      case 'lock_dir':
      case 'pid_dir':
        converted(acc, e, '(not needed: the daemon drops root to `user` and keeps its state in state_dir)');
        break;
      case 'remote_port':
        notConverted(acc, e, 'deprecated in masqmail; put the port into the route\'s smarthost = "host:port"', main);
        break;
      case 'local_addresses':
      case 'not_local_addresses':
        notConverted(acc, e, 'tidemail decides locality by domain; use [local.virtual."domain"] maps for single addresses', main);
        break;
      case 'do_queue':
      case 'defer_all':
        if (bool(e.value)) notConverted(acc, e, 'tidemail always tries at once (online routes only); `tidemail queue hold` holds single messages', main);
        else converted(acc, e, '(off: the default)');
        break;
      case 'do_save_envelope_to':
        notConverted(acc, e, 'tidemail does not rename Envelope-to: headers', main);
        break;
      case 'ident_trusted_nets':
        notConverted(acc, e, 'tidemail does not use ident; queue commands are for root and the message\'s owner', main);
        break;
      case 'errmsg_file':
      case 'warnmsg_file':
        notConverted(acc, e, 'tidemail writes standard RFC 3464 delivery reports; templates are not supported', main);
        break;
      default:
        notConverted(acc, e, unknownKey('masqmail.conf(5)'), main);
    }
  }
  for (const p of problems) acc.report.notes.push(p);

  // How each named route learns it is online, from online_detect / online_file / online_pipe.
  if (online.kind === 'file') online = { kind: 'file', file: onlineFile?.value ?? '/var/run/masqmail/masqmail-route' };
  if (online.kind === 'pipe') online = { kind: 'pipe', command: onlinePipe?.value ?? '' };
  if (online.kind === 'none' && (onlineFile || onlinePipe)) online = onlinePipe ? { kind: 'pipe', command: onlinePipe.value } : { kind: 'file', file: onlineFile!.value };
  const named = routeFiles.filter((r) => !r.permanent);
  const onlineFor = (name: string, permanent: boolean) => (t: TomlText) => {
    t.blank();
    if (permanent) {
      t.comment('A permanent route in masqmail: always online.');
      return;
    }
    if (online.kind === 'file') {
      // masqmail's file holds the name of the current connection; with one route its existence is enough.
      if (named.length === 1) {
        t.comment(`masqmail: online_detect = file (${online.file} names the connection); tidemail: online while the file exists.`);
        t.set(['online', 'file'], online.file);
      } else {
        t.comment(`masqmail: online_detect = file; online while ${online.file} names this connection.`);
        t.set(['online', 'command'], `grep -qxF '${name}' '${online.file}'`);
      }
    } else if (online.kind === 'pipe' && online.command) {
      t.comment('masqmail: online_detect = pipe; online while the command prints this connection\'s name.');
      t.set(['online', 'command'], `test "$(${online.command})" = '${name}'`);
    } else {
      t.comment(`masqmail started this route with \`masqmail -qo ${name}\` from ip-up: call \`tidemail link up ${routeName(name)}\` there instead,`);
      t.comment('or create this file in ip-up and remove it in ip-down.');
      t.set(['online', 'file'], `/run/tidemail/${routeName(name)}.online`);
    }
  };

  const routes: RouteOut[] = [];
  for (const r of routeFiles) {
    r.files.forEach((file, i) => {
      const name = routeName(r.files.length > 1 ? `${r.name}-${i + 1}` : r.name);
      try {
        // Several files for one connection were tried in order: keep that order with priorities.
        routes.push(convertRouteFile(file, name, outDir, acc, onlineFor(r.name, r.permanent), r.files.length > 1 ? 50 + i : undefined));
      } catch (err) {
        acc.report.notes.push(`cannot convert the route file ${file}: ${(err as Error).message}`);
      }
    });
  }
  if (localNets.length || localNetRoute) {
    const recipients = localNets.map((n) => (n.includes('.') || n.includes('*') || n.includes('@') ? n : `*@${n}`));
    let r: RouteOut;
    if (localNetRoute) {
      try {
        r = convertRouteFile(localNetRoute, 'local-net', outDir, acc, (t) => t.blank().comment('The local net is always reachable.'), 10);
      } catch (err) {
        acc.report.notes.push(`cannot convert the local_net_route ${localNetRoute}: ${(err as Error).message}`);
        r = { name: 'local-net', text: new TomlText().set('priority', 10).set('kind', 'mx'), secrets: [], fetch: [] };
      }
    } else {
      r = { name: 'local-net', text: new TomlText().comment('masqmail\'s default route for local_nets: direct delivery.').set('priority', 10).set('kind', 'mx'), secrets: [], fetch: [] };
    }
    if (recipients.length) r.text.set('recipients', recipients, 'masqmail local_nets');
    routes.push(r);
  }

  // POP3 accounts: online_gets.NAME are fetched when route NAME is online; get.NAME only on request.
  for (const g of gets) {
    const route = routes.find((r) => r.name === routeName(g.name)) ?? routes.find((r) => r.name.startsWith(`${routeName(g.name)}-`));
    for (const file of g.files) {
      const account = convertGetFile(file, acc, route ? `routes/${route.name}.toml` : main);
      if (!account) continue;
      if (!route) {
        acc.report.notConverted.push({ at: path.basename(confFile), key: `${g.online ? 'online_gets' : 'get'}.${g.name}`, value: file, reason: `there is no route "${g.name}" to attach the POP3 account to; add a [[fetch]] entry to the route it should be fetched with` });
        continue;
      }
      route.fetch.push(account);
    }
  }

  // Assemble the files.
  const files: PlannedFile[] = [];
  const t = new TomlText().comment(`Converted from ${confFile} by \`tidemail import-masqmail\`.`).comment('Check it with `tidemail config check`.').blank();
  for (const [k, v, c] of top) t.set(k, v, c);
  if (smtp.length) {
    t.table('smtp');
    for (const [k, v, c] of smtp) t.set(k, v, c);
  }
  if (local.length) {
    t.table('local');
    for (const [k, v, c] of local) t.set(k, v, c);
  }
  if (queue.length) {
    t.table('queue');
    for (const [k, v, c] of queue) t.set(k, v, c);
  }
  const leftover = (target: string, text: TomlText) => {
    const l = acc.leftovers.get(target);
    if (l?.length) text.blank().comment(l.join('\n'));
  };
  leftover(main, t);
  files.push({ path: path.join(outDir, 'tidemail.toml'), content: t.toString() });
  let pop = 0;
  for (const r of routes) {
    for (const f of r.fetch) {
      pop++;
      r.text.arrayTable('fetch').set('server', f.server).set('tls', f.tls);
      if (f.user) r.text.set('user', f.user);
      if (f.password !== undefined) {
        const file = path.join(outDir, 'secrets', `pop-${pop}`);
        r.secrets.push({ path: file, content: `${f.password}\n`, secret: true });
        r.text.set('password_file', file, 'mode 0600');
      }
      if (f.auth === 'apop') r.text.set('auth', 'apop');
      r.text.set('deliver_to', [f.deliverTo ?? 'postmaster']).set('keep', f.keep);
      if (f.maxSize) r.text.set('max_size', f.maxSize);
      if (!f.user || f.password === undefined) acc.report.notes.push(`${f.file}: no user or pass; fill them into routes/${r.name}.toml`);
    }
    leftover(`routes/${r.name}.toml`, r.text);
    files.push({ path: path.join(outDir, 'routes', `${r.name}.toml`), content: r.text.toString() }, ...r.secrets);
  }
  if (!routes.length) acc.report.notes.push('no routes were found (online_routes.NAME / query_routes.NAME / permanent_routes): mail for other hosts will wait until you add one');
  return { files, report: acc.report };
}
