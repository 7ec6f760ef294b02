// `sendmail` (and `tidemail sendmail`): the local submission path. Writes the message into the
// maildrop, fsyncs it, pokes the daemon and exits 0 — whether or not the daemon runs.

import { UsageError } from '../errors.js';
import { MaildropSpool } from '../queue/maildrop.js';
import type { MessageMeta, Spool } from '../queue/store.js';
import { cliContext, type CliContext } from './context.js';
import { EX } from './exit.js';
import { SendmailUsageError, parseSendmailArgs, type SendmailArgs } from './sendmail-args.js';
import { ensureMaildrop, poke, submit } from './sendmail-submit.js';
import { stdinChunks } from './stdin.js';

export { ensureMaildrop, parseRecipientArgs, poke, senderFor, submit } from './sendmail-submit.js';

export async function runSendmail(argv: string[]): Promise<number> {
  let args: SendmailArgs;
  try {
    args = parseSendmailArgs(argv);
  } catch (err) {
    if (err instanceof SendmailUsageError) throw new UsageError(err.message);
    throw err;
  }
  if (args.verbose && args.ignored.length) process.stderr.write(`sendmail: ignored for compatibility: ${args.ignored.join(' ')}\n`);
  switch (args.mode) {
    // The other modes load their modules when used: plain `sendmail` loads only what writing
    // the maildrop file needs (issue 17).
    case 'mailq':
      return (await import('./queue.js')).runMailq(args.configPath ? ['--config', args.configPath] : []);
    case 'runq':
      return (await import('./queue.js')).runQueueCommand(['flush', ...(args.configPath ? ['--config', args.configPath] : [])]);
    case 'newaliases':
      return (await import('./newaliases.js')).runNewaliases(args.configPath ? ['--config', args.configPath] : []);
    case 'daemon':
      return (await import('./daemon.js')).runDaemon(args.configPath ? ['--config', args.configPath] : []);
    case 'smtp':
      await serveSmtpOnStdio(cliContext(args.configPath), '127.0.0.1', 'sendmail-bs');
      return EX.OK;
    case 'deliver':
      return submit(cliContext(args.configPath), args, stdinChunks(), 'sendmail');
  }
}

/**
 * SMTP on stdin/stdout (sendmail -bs, inetd smtpd); accepted mail goes to the maildrop.
 * Resolves when the session is over and the daemon has been told about every message.
 * `fromNetwork`: stdin is a TCP connection (inetd), so the client's address decides relaying;
 * otherwise the caller is a local user on a pipe, who may relay like `sendmail` does.
 */
export async function serveSmtpOnStdio(ctx: CliContext, remoteAddress: string, via: string, fromNetwork = false): Promise<void> {
  const [{ SmtpFront }, { localRecipientCheck }, { createLocalLane }, { StdioSession }] = await Promise.all([
    import('../smtp/server.js'),
    import('../smtp/recipient-check.js'),
    import('../deliver/local.js'),
    import('./stdio-session.js'),
  ]);
  const dir = ensureMaildrop(ctx);
  const pokes: Promise<void>[] = [];
  const unfinished = new Set<MaildropSpool>();
  // The daemon's recipient rules: an unknown local user is refused at RCPT here too (550), not
  // accepted into the maildrop and bounced later. Nothing is delivered from this process.
  const local = createLocalLane(ctx.config, async () => undefined);
  const front = new SmtpFront({
    config: ctx.config,
    via,
    trustAll: !fromNetwork,
    isLocal: (a) => local.isLocal(a),
    checkRecipient: localRecipientCheck(local.resolver),
    sink: {
      openMessage: (): Spool => {
        const spool = new MaildropSpool(dir);
        unfinished.add(spool);
        return {
          get msgid() {
            return spool.msgid;
          },
          get size() {
            return spool.size;
          },
          write: (chunk) => spool.write(chunk),
          readBack: () => spool.readBack(),
          rewrite: (headerEnd, edit) => spool.rewrite(headerEnd, edit),
          prepend: (header) => spool.prepend(header),
          commit: async (meta) => {
            await spool.commit(meta);
            unfinished.delete(spool);
          },
          rollback: () => spool.rollback(),
        };
      },
      committed: (_id: string, _meta: MessageMeta) => void pokes.push(poke(ctx, false)),
    },
  });
  await front.serveStream(new StdioSession(process.stdin, process.stdout, { remoteAddress, fixLineEnds: !fromNetwork }), remoteAddress);
  // The caller exits right after. Finish here what the session leaves behind: the pokes (or the
  // message waits for the daemon's next periodic scan) and the temp file of a message the
  // client abandoned mid-DATA (its rollback may still be on its way).
  await Promise.all([...pokes, ...[...unfinished].map((s) => s.rollback())]);
}
