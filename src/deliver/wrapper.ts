// Wrapper hop: SMTP spoken over a command's stdin/stdout, like masqmail's `wrapper` option —
// e.g. ["ssh", "relay", "nc", "localhost", "25"] or ["openssl", "s_client", "-quiet", …].

import { spawn } from 'node:child_process';
import { Duplex } from 'node:stream';
import type { WrapperRoute } from '../routes/profile.js';
import type { SmtpHop } from './smtp.js';

export function wrapperHop(route: WrapperRoute): SmtpHop {
  const [cmd, ...args] = route.command;
  return {
    label: `wrapper "${route.command.join(' ')}"`,
    host: 'localhost',
    port: 0,
    servername: 'localhost',
    openStream: () =>
      new Promise((resolve, reject) => {
        const child = spawn(cmd!, args, { stdio: ['pipe', 'pipe', 'pipe'] });
        let stderr = '';
        child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-300)));
        child.once('error', (err) => reject(new Error(`cannot run ${cmd}: ${err.message}`)));
        child.once('spawn', () => {
          const stream = Duplex.from({ readable: child.stdout, writable: child.stdin });
          child.once('exit', (code) => {
            if (code) stream.destroy(new Error(`${cmd} exited with ${code}${stderr ? `: ${stderr.trim()}` : ''}`));
          });
          stream.once('close', () => child.kill());
          resolve(stream);
        });
      }),
  };
}
