// smtpd / in.smtpd: one SMTP session on stdin/stdout, as started by inetd or systemd socket
// activation (Accept=yes). When stdin is a TCP connection the client's address decides relaying;
// on a pipe (most programs' "pipes" are Unix socketpairs) the caller is a local user.

import type net from 'node:net';
import { cliContext, takeConfigOption } from './context.js';
import { EX } from './exit.js';
import { serveSmtpOnStdio } from './sendmail.js';

export async function runSmtpd(argv: string[]): Promise<number> {
  const args = [...argv];
  const configPath = takeConfigOption(args);
  // Anything else is a mistake (inetd.conf's argument list, `smtpd --version`): said before a
  // session starts, so it never runs on the default configuration the caller did not mean.
  if (args.length) {
    process.stderr.write(`smtpd: unknown argument ${JSON.stringify(args[0])}; usage: smtpd [--config FILE]\n`);
    return EX.USAGE;
  }
  const ctx = cliContext(configPath);
  // Node gives stdin a remote address only when fd 0 is a TCP socket.
  const peer = (process.stdin as Partial<net.Socket>).remoteAddress;
  await serveSmtpOnStdio(ctx, peer ?? '127.0.0.1', 'smtpd', peer !== undefined);
  return EX.OK;
}
