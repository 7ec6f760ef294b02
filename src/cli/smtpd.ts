// smtpd / in.smtpd: one SMTP session on stdin/stdout, as started by inetd or systemd socket
// activation (Accept=yes). When stdin is a TCP socket the client's address decides relaying.

import net from 'node:net';
import fs from 'node:fs';
import { cliContext, takeConfigOption } from './context.js';
import { EX } from './exit.js';
import { serveSmtpOnStdio } from './sendmail.js';

export async function runSmtpd(argv: string[]): Promise<number> {
  const args = [...argv];
  const ctx = cliContext(takeConfigOption(args));
  if (fs.fstatSync(0).isSocket()) {
    const sock = new net.Socket({ fd: 0, readable: true, writable: true });
    await serveSmtpOnStdio(ctx, sock.remoteAddress ?? '127.0.0.1', 'smtpd', sock);
  } else {
    await serveSmtpOnStdio(ctx, '127.0.0.1', 'smtpd');
  }
  return EX.OK;
}
