// Probe: every listener (listen, submission, smtps) can be bound. With the daemon running the
// ports are its own, which is the good case; otherwise we bind each one for a moment.

import net from 'node:net';
import type { Config, ListenAddress } from '../config/schema.js';
import { fail, ok, warn, type Finding } from './finding.js';

const AREA = 'ports';

function tryBind(l: ListenAddress): Promise<NodeJS.ErrnoException | null> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', (err) => resolve(err as NodeJS.ErrnoException));
    srv.listen({ host: l.host, port: l.port, exclusive: true }, () => srv.close(() => resolve(null)));
  });
}

export async function probePorts(config: Config, daemonPid: number | null): Promise<Finding[]> {
  const all: [string, ListenAddress][] = [
    ...config.smtp.listen.map((l) => ['listen', l] as [string, ListenAddress]),
    ...config.smtp.submission.map((l) => ['submission', l] as [string, ListenAddress]),
    ...config.smtp.smtps.map((l) => ['smtps', l] as [string, ListenAddress]),
  ];
  const out: Finding[] = [];
  const root = process.getuid?.() === 0;
  for (const [kind, l] of all) {
    const name = `${l.host.includes(':') ? `[${l.host}]` : l.host}:${l.port}`;
    if (daemonPid !== null) {
      out.push(ok(AREA, `${kind} ${name}: held by the running daemon (pid ${daemonPid})`));
      continue;
    }
    const err = await tryBind(l);
    if (!err) out.push(ok(AREA, `${kind} ${name}: can be bound`));
    else if (err.code === 'EADDRINUSE') {
      out.push(fail(AREA, `${kind} ${name}: already in use by another program`, `see who: ss -ltnp 'sport = :${l.port}' — stop it (another MTA?) or change [smtp] ${kind}`));
    } else if (err.code === 'EACCES' && !root && l.port < 1024) {
      out.push(warn(AREA, `${kind} ${name}: a port below 1024 needs root; not tested as this user`, `start the daemon as root (it drops to user "${config.user}" after binding), or run this check as root`));
    } else if (err.code === 'EADDRNOTAVAIL') {
      out.push(fail(AREA, `${kind} ${name}: ${l.host} is not an address of this machine`, `use one of the addresses \`ip -br addr\` shows, or 0.0.0.0 / [::]`));
    } else {
      out.push(fail(AREA, `${kind} ${name}: cannot bind: ${err.code ?? err.message}`, `check [smtp] ${kind}`));
    }
  }
  return out;
}
