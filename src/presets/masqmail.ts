// Converting a masqmail configuration (masqmail.conf(5), masqmail.route(5), masqmail.get(5);
// versions 0.2 and 0.3) into tidemail's tidemail.toml + routes/*.toml + secrets.
//
// Every key read is accounted for: converted (and to what), or listed as not converted with the
// reason — a key we do not know is never dropped silently. The not-converted ones are also left
// as comments in the file they would have gone to, so the next person reading it sees them.

import fs from 'node:fs';
import path from 'node:path';
import { parseSize } from '../config/units.js';
import { TomlText, type PlannedFile, type TomlValue } from './writer.js';

import { at, flag, converted, duration, inputPath, mapVariables, masqList, notConverted, parseMasqFile, readMasqText, splitCommand, type Accounting, type MasqEntry, type ImportResult } from './masqmail-parse.js';
import { convertGetFile, convertRouteFile, unknownKey, type OnlineMethod, type RouteOut } from './masqmail-route.js';

export type { ImportReport, ImportResult, MasqEntry } from './masqmail-parse.js';

/** A regular file others may read (an aliases file is public). */
function isPublicFile(file: string): boolean {
  try {
    const st = fs.statSync(file);
    return st.isFile() && (st.mode & 0o004) !== 0;
  } catch {
    return false;
  }
}

/** The converted configuration for masqmail.conf `confFile`, to be written to `outDir`. */
export function convertMasqmail(confFile: string, outDir: string): ImportResult {
  const acc: Accounting = { report: { errors: [], converted: [], notConverted: [], notes: [] }, mainFile: confFile, leftovers: new Map() };
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
          // Like /etc/mailname: a public file whose first line is the name. Anything else is
          // reported by path only.
          try {
            h = readMasqText(h, true).split('\n')[0]!.trim();
          } catch (err) {
            acc.report.errors.push(`${e.file}:${e.line}: host_name: ${(err as Error).message}`);
            break;
          }
          if (!/^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$/.test(h)) {
            acc.report.errors.push(`${e.file}:${e.line}: host_name: the first line of ${e.value} is not a host name`);
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
        // Not read here; but a private file is no aliases file (the daemon reads it as its own
        // user, newaliases compiles it): say so now, by path only.
        if (!isPublicFile(inputPath(e.value))) {
          notConverted(acc, e, 'not a regular file readable by everyone; point [local] aliases at your aliases file by hand', main);
          break;
        }
        // Under --root, the copy in the image: the result is used in place, as setup --root's is.
        local.push(['aliases', inputPath(e.value), 'run `newaliases` once to compile it for tidemail']);
        converted(acc, e, '[local] aliases');
        break;
      case 'alias_local_caseless':
      case 'caseless_matching':
        flag(acc, e);
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
        if (flag(acc, e)) notConverted(acc, e, 'tidemail does not add a "From " line for MDAs or alias pipes (procmail and dovecot-lda do not need it)', main);
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
        if (flag(acc, e)) acc.report.notes.push(`${at(e)} do_relay = true: tidemail relays only for [smtp] trusted_networks (loopback by default) and authenticated users — add your LAN there`);
        converted(acc, e, '[smtp] trusted_networks (relaying is closed by default)');
        break;
      case 'spool_dir':
        converted(acc, e, '(tidemail keeps its queue in state_dir; flush the masqmail queue with `masqmail -qf` before switching)');
        break;
      case 'use_syslog':
      case 'log_dir':
      case 'debug_level':
        if (e.key === 'use_syslog') flag(acc, e);
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
        if (flag(acc, e)) notConverted(acc, e, 'tidemail always tries at once (online routes only); `tidemail queue hold` holds single messages', main);
        else converted(acc, e, '(off: the default)');
        break;
      case 'do_save_envelope_to':
        if (!flag(acc, e)) {
          converted(acc, e, '(off: the default)');
          break;
        }
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
        notConverted(acc, e, unknownKey('masqmail.conf(5)'), main, true);
    }
  }
  for (const p of problems) acc.report.errors.push(p);

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
        acc.report.errors.push(`route file of ${r.name}: ${(err as Error).message}`);
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
        acc.report.errors.push(`local_net_route: ${(err as Error).message}`);
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
