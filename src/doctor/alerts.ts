// Probe: [alerts] — what is watched, and that the actions can work: the command exists and is
// executable, the URL's host resolves, the token file is there. Nothing is run or POSTed: a
// check must not page anyone.

import dns from 'node:dns';
import fs from 'node:fs';
import type { Config } from '../config/schema.js';
import { formatDuration } from '../config/units.js';
import { fail, ok, warn, type Finding } from './finding.js';

export async function probeAlerts(config: Config): Promise<Finding[]> {
  const a = config.alerts;
  if (!a.command && !a.url) return [];
  const watched = [
    a.mailWaitingMs !== null ? `mail waiting > ${formatDuration(a.mailWaitingMs)}` : '',
    a.routeFailingMs !== null ? `route failing > ${formatDuration(a.routeFailingMs)}` : '',
    a.fetchFailingMs !== null ? `fetch FAILING${a.fetchFailingMs ? ` > ${formatDuration(a.fetchFailingMs)}` : ''}` : '',
  ].filter(Boolean).join(', ');
  const out: Finding[] = [ok('alerts', `watching ${watched}; repeat every ${formatDuration(a.repeatMs)}${a.cleared ? ', cleared notices on' : ''}`)];
  if (a.command) {
    const cmd = a.command[0]!;
    let st: fs.Stats | null = null;
    try {
      st = fs.statSync(cmd);
    } catch (err) {
      out.push(fail('alerts', `command ${cmd} cannot be found (${(err as NodeJS.ErrnoException).code})`, `install it, or fix [alerts] command in ${config.file}`));
    }
    // The daemon's user runs it: without "other" execute it needs to own the file or its group.
    const mode = st ? (st.mode & 0o777).toString(8) : '';
    if (st && (!st.isFile() || !(st.mode & 0o111))) {
      out.push(fail('alerts', `command ${cmd} is not an executable file (mode ${mode})`, `chmod 755 ${cmd} (it runs as the daemon's user, ${config.user})`));
    } else if (st && !(st.mode & 0o001)) {
      out.push(warn('alerts', `command ${cmd} (mode ${mode}) is executable only by its owner or group`, `make sure ${config.user} may run it, or chmod 755 ${cmd}`));
    } else if (st) out.push(ok('alerts', `command ${cmd} is executable`));
  }
  if (a.url) {
    const u = new URL(a.url);
    // The origin only: a path such as an ntfy topic works like a password.
    try {
      await dns.promises.lookup(u.hostname);
      out.push(ok('alerts', `url ${u.origin}/… resolves${a.tokenFile ? `; token from ${a.tokenFile}` : ''} (not POSTed by check)`));
    } catch (err) {
      out.push(warn('alerts', `url host ${u.hostname} does not resolve now (${(err as NodeJS.ErrnoException).code})`, 'check the name; alerts by URL need DNS and a link when they fire — add a command too for when the link is down'));
    }
  }
  return out;
}
