// Writing one submitted message into the maildrop: what `sendmail` does when cron runs it, and
// what rmail and the fast sendmail bundle (src/sendmail-main.ts) share. No dynamic imports here:
// dist/bundle/sendmail.cjs is this module and what it imports, in one file (issue 17).

import fs from 'node:fs';
import addressparser from 'nodemailer/lib/addressparser/index.js';
import { TempFailError } from '../errors.js';
import { currentUserName } from '../local/users.js';
import { printable } from '../log/printable.js';
import { invisibleReason, isValidEnvelopeAddress, nonMailboxReason, qualify } from '../message/address.js';
import { writeSubmission } from '../message/submission.js';
import { mib, reserveOf, roomSync } from '../queue/free-space.js';
import { MaildropSpool, MessageTooBigError, maildropDir } from '../queue/maildrop-spool.js';
import type { CliContext } from './context.js';
import { EX } from './exit.js';
import type { SendmailArgs } from './sendmail-args.js';

/** What part of the reserve a local submission leaves untouched (docs/DESIGN-NOTES.md). */
const LOCAL_SHARE = 0.5;

/** Envelope sender: -f (with "<>" for the null sender), else user@hostname. */
export function senderFor(args: Pick<SendmailArgs, 'sender'>, hostname: string): string {
  if (args.sender !== undefined) {
    const s = args.sender.replace(/^<(.*)>$/, '$1').trim();
    return s === '' ? '' : qualify(s, hostname);
  }
  return qualify(currentUserName(), hostname);
}

/** Command-line recipients may be comma-separated lists with display names. */
export function parseRecipientArgs(words: readonly string[], hostname: string): string[] {
  const out: string[] = [];
  for (const w of words) {
    for (const a of addressparser(w)) {
      if ('group' in a) {
        for (const g of a.group ?? []) if (g.address) out.push(qualify(g.address, hostname));
      } else if (a.address) {
        out.push(qualify(a.address, hostname));
      } else if (a.name) {
        // addressparser files a word without "@" under name: "root" is a local user, and
        // anything else ("foo bar") must reach the syntax check rather than vanish.
        out.push(qualify(a.name, hostname));
      }
    }
  }
  return out;
}

export async function submit(ctx: CliContext, args: SendmailArgs, input: AsyncIterable<Buffer>, via: string, traceWith?: string): Promise<number> {
  const { hostname } = ctx.config;
  const sender = senderFor(args, hostname);
  if (sender && nonMailboxReason(sender)) {
    process.stderr.write(`sendmail: <${printable(sender)}>: not a mailbox address (${nonMailboxReason(sender)}); give -f a mailbox\n`);
    return EX.DATAERR;
  }
  if (sender && !isValidEnvelopeAddress(sender)) {
    process.stderr.write(`sendmail: bad sender address <${printable(sender)}>${because(sender)}\n`);
    return EX.DATAERR;
  }
  // A bidi override or zero-width character in the From: name would hide what the reader sees.
  const nameProblem = args.fullName === undefined ? null : invisibleReason(args.fullName);
  if (nameProblem) {
    process.stderr.write(`sendmail: bad full name (-F) "${printable(args.fullName!)}": ${nameProblem}\n`);
    return EX.DATAERR;
  }
  const cmdline = parseRecipientArgs(args.recipients, hostname);
  if (!args.extractRecipients && cmdline.length === 0) {
    process.stderr.write('sendmail: no recipients given (name them on the command line, or use -t to read To/Cc/Bcc)\n');
    return EX.USAGE;
  }
  // A local submission may use the lower half of [queue] queue_minfree, which the network may
  // not: cron's and the alerts' mail is small, and nobody retries it (cron drops its output on
  // exit 75), while the half left still holds the DSNs and records of mail already taken.
  // Below that nothing is written. queue_minfree = 0: no reserve, a full disk is the kernel's
  // ENOSPC ("disk full") as before.
  const { stateDir, queue, smtp } = ctx.config;
  const room = queue.queueMinfree === 0 ? null : roomSync(stateDir);
  const minfree = room ? Math.floor(reserveOf(queue.queueMinfree, smtp.maxMessageSize, room.size) * LOCAL_SHARE) : 0;
  const free = room?.free ?? null;
  if (free !== null && free < minfree) {
    process.stderr.write(`sendmail: cannot queue the message: ${stateDir} has ${mib(free)} free, less than the ${mib(minfree)} of [queue] queue_minfree that local mail may not use (it is kept for mail already queued); nothing was sent, try again later\n`);
    return EX.TEMPFAIL;
  }
  let spool: MaildropSpool | null = null;
  try {
    spool = new MaildropSpool(ensureMaildrop(ctx), { maxSize: ctx.config.smtp.maxMessageSize, ...(free !== null ? { room: free - minfree } : {}) });
    const uid = process.getuid?.() ?? -1;
    const res = await writeSubmission(input, spool, {
      extractRecipients: args.extractRecipients,
      dotTerminates: !args.ignoreDots,
      sender,
      fullName: args.fullName,
      hostname,
      uid,
      // The daemon adds the "from userid N" trace at pickup (a file's own lines prove nothing).
      traceWith,
    });
    const recipients = [...new Set([...cmdline, ...res.headerRecipients.map((r) => qualify(r, hostname))])];
    if (recipients.length === 0) {
      await spool.rollback();
      process.stderr.write('sendmail: no recipient addresses found in the message header\n');
      return EX.DATAERR;
    }
    // "/path" or "|cmd" as a recipient: files and pipes are set in the aliases file or ~/.forward.
    const notMailbox = recipients.find((r) => nonMailboxReason(r));
    if (notMailbox) {
      await spool.rollback();
      process.stderr.write(`sendmail: <${printable(notMailbox)}>: not a mailbox address (${nonMailboxReason(notMailbox)}); mail to files and commands is set up in the aliases file or ~/.forward\n`);
      return EX.DATAERR;
    }
    const bad = recipients.find((r) => !isValidEnvelopeAddress(r));
    if (bad) {
      await spool.rollback();
      process.stderr.write(`sendmail: bad recipient address <${printable(bad)}>${because(bad)}\n`);
      return EX.DATAERR;
    }
    await spool.commit({ sender, recipients, via });
    if (args.verbose) process.stderr.write(`sendmail: queued as ${spool.msgid} for ${recipients.join(', ')}\n`);
  } catch (err) {
    await spool?.rollback();
    return submissionFailed(err, ctx);
  }
  await poke(ctx, args.verbose);
  return EX.OK;
}

/** ": why", for an address whose fault is not visible in the escaped text alone. */
function because(address: string): string {
  const why = invisibleReason(address);
  return why ? `: ${why}` : '';
}

/**
 * Exit code and message for a submission that could not be queued. Too big is the input's fault
 * (EX_DATAERR, like a 552); a maildrop we cannot write — read-only or full disk, permissions,
 * no daemon has made it yet — is the system's, and the caller may try again (EX_TEMPFAIL).
 */
function submissionFailed(err: unknown, ctx: CliContext): number {
  const prog = 'sendmail';
  if (err instanceof MessageTooBigError) {
    process.stderr.write(`${prog}: ${err.message} in ${ctx.config.file ?? 'the default configuration'}; not sent\n`);
    return EX.DATAERR;
  }
  if (err instanceof TempFailError) {
    process.stderr.write(`${prog}: ${err.message}\n`);
    return EX.TEMPFAIL;
  }
  const e = err as NodeJS.ErrnoException;
  const why = FS_ERRORS[e?.code ?? ''];
  if (why) {
    process.stderr.write(`${prog}: cannot queue the message: ${maildropDir(ctx.config.stateDir)}: ${why} (${e.code}); nothing was sent, try again later\n`);
    return EX.TEMPFAIL;
  }
  throw err;
}

const FS_ERRORS: Record<string, string> = {
  EROFS: 'read-only file system',
  ENOSPC: 'disk full',
  EDQUOT: 'disk quota exceeded',
  EIO: 'I/O error',
  EACCES: 'permission denied (the maildrop is missing or not writable for you; is the daemon installed?)',
  EPERM: 'operation not permitted',
  ENOENT: 'no such directory, and it cannot be created',
  ENOTDIR: 'a path component is not a directory',
};

/** The maildrop directory; created (mode 1733) when we are allowed to and it is missing. */
export function ensureMaildrop(ctx: CliContext): string {
  const dir = maildropDir(ctx.config.stateDir);
  if (!fs.existsSync(dir)) {
    fs.mkdirSync(dir, { recursive: true });
    fs.chmodSync(dir, 0o1733);
  }
  return dir;
}

/** Tells a running daemon to pick the message up; silent when none runs (it will at start). */
export async function poke(ctx: CliContext, verbose: boolean): Promise<void> {
  try {
    // No socket file, no daemon: what the connect would say (ENOENT → null), without loading
    // node's net module for it (a few ms of a cron sendmail, issue 17). The daemon also watches
    // the maildrop (inotify) and scans it every minute.
    const r = socketMissing(ctx.socket) ? null : await ctx.ask({ cmd: 'poke' }, 10_000);
    if (verbose) process.stderr.write(r === null ? 'sendmail: daemon not running; the message waits in the maildrop\n' : 'sendmail: daemon notified\n');
  } catch (err) {
    if (verbose) process.stderr.write(`sendmail: could not notify the daemon: ${(err as Error).message}\n`);
  }
}

function socketMissing(socket: string): boolean {
  try {
    fs.statSync(socket);
    return false;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return code === 'ENOENT' || code === 'ENOTDIR';
  }
}
