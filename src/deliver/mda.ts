// MDA delivery: hand one recipient's copy to a mail delivery agent (procmail, dovecot-lda,
// maildrop) on its stdin, as Postfix's local(8) does with mailbox_command. Arguments may name
// "{sender}" (MAILER-DAEMON for the null sender, as Postfix's pipe(8)), "{recipient}" and
// "{user}". The message starts with Return-Path and Delivered-To (dovecot-lda takes the sender
// from Return-Path when not given -f; Sieve uses Delivered-To) and has LF line ends.
//
// The exit code decides, sysexits(3)-style: 0 delivered; 75 (EX_TEMPFAIL), 71 (EX_OSERR), a
// signal or our timeout retried; the other codes 64–78 bounce with the agent's stderr; any
// other code is retried (never bounce on an answer we do not understand).

import { spawn } from 'node:child_process';
import { pipeline, type Readable } from 'node:stream';
import { localMessage, MessageReadError, type LocalDeliveryInfo } from './local-headers.js';
import type { DeliveryResult } from './transport.js';

export type { LocalDeliveryInfo } from './local-headers.js';

/** sysexits.h code → enhanced status and meaning, as in Postfix's sys_exits.c. */
const SYSEXITS: Record<number, [string, string]> = {
  64: ['5.3.0', 'command line usage error'],
  65: ['5.6.0', 'data format error'],
  66: ['5.3.0', 'cannot open input'],
  67: ['5.1.1', 'user unknown'],
  68: ['5.1.2', 'host name unknown'],
  69: ['5.3.0', 'service unavailable'],
  70: ['5.3.0', 'internal software error'],
  71: ['4.3.0', 'system resource problem'],
  72: ['5.3.0', 'critical OS file missing'],
  73: ['5.2.0', "can't create user output file"],
  74: ['5.3.0', 'input/output error'],
  75: ['4.3.0', 'temporary failure'],
  76: ['5.5.0', 'remote error in protocol'],
  77: ['5.7.0', 'permission denied'],
  78: ['5.3.5', 'local configuration error'],
};
const TEMPORARY = new Set([71, 75]);
const DEFAULT_TIMEOUT_MS = 10 * 60_000;

/** Expands "{sender}", "{recipient}" and "{user}" anywhere in each argument. */
export function expandMdaArgs(argv: readonly string[], info: LocalDeliveryInfo): string[] {
  const user = info.user?.name ?? info.recipient.replace(/@[^@]*$/, '');
  return argv.map((a) =>
    a.replaceAll('{sender}', info.sender || 'MAILER-DAEMON').replaceAll('{recipient}', info.recipient).replaceAll('{user}', user),
  );
}

/**
 * Runs the MDA `argv` (after expansion) with the message on stdin; as `info.user` when we are
 * root. It gets a small environment of its own (PATH, HOME, USER, LOGNAME, SENDER, RECIPIENT),
 * not the daemon's.
 * @returns ok on exit 0; tempfail on 71/75, a signal, `timeoutMs` passing (the agent's whole
 * process group is killed), a code outside sysexits or when it cannot be started; permfail with
 * the agent's stderr on the other sysexits codes.
 */
export function deliverMda(argv: string[], body: () => Readable, info: LocalDeliveryInfo, timeoutMs = DEFAULT_TIMEOUT_MS, opts: { expand?: boolean } = {}): Promise<DeliveryResult> {
  // A shell command (an aliases or .forward pipe) is never expanded: "{sender}" in it would put
  // the SMTP peer's text into the shell (`cmd`@x); such commands read $SENDER and $RECIPIENT.
  const [cmd, ...args] = opts.expand === false ? argv : expandMdaArgs(argv, info);
  if (!cmd) return Promise.resolve({ outcome: 'tempfail', message: '4.3.5 no MDA command configured' });
  const asUser = info.user && process.getuid?.() === 0 ? info.user : undefined;
  const env: NodeJS.ProcessEnv = {
    PATH: process.env['PATH'] ?? '/usr/local/bin:/usr/bin:/bin',
    SENDER: info.sender,
    RECIPIENT: info.recipient,
  };
  if (process.env['TZ']) env['TZ'] = process.env['TZ'];
  if (info.user) Object.assign(env, { HOME: info.user.home, USER: info.user.name, LOGNAME: info.user.name });

  return new Promise((resolve) => {
    let settled = false;
    const finish = (r: DeliveryResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(r);
    };
    // Its own process group, so a timeout also ends what the agent started (Postfix does the same).
    const child = spawn(cmd, args, { stdio: ['pipe', 'ignore', 'pipe'], env, uid: asUser?.uid, gid: asUser?.gid, detached: true });
    const killAll = () => {
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        child.kill('SIGKILL');
      }
    };
    let stderr = '';
    let timedOut = false;
    let readError: MessageReadError | undefined;
    child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-500)));
    const timer = setTimeout(() => {
      timedOut = true;
      killAll();
    }, timeoutMs);
    child.on('error', (err) => finish({ outcome: 'tempfail', message: `4.3.0 cannot run ${cmd}: ${err.message}` }));
    // Something the agent left running (`cmd &`, a daemon) may keep stderr open for hours:
    // its exit decides, and we stop listening a second after it.
    let exitTimer: NodeJS.Timeout | undefined;
    child.on('exit', () => {
      exitTimer = setTimeout(() => child.stderr.destroy(), 1000);
      exitTimer.unref();
    });
    child.on('close', (code, signal) => {
      clearTimeout(exitTimer);
      const said = stderr.trim().replace(/\s+/g, ' ');
      const tail = said ? `: ${said}` : '';
      if (readError) return finish({ outcome: 'tempfail', message: `4.3.0 ${readError.message}` });
      if (timedOut) return finish({ outcome: 'tempfail', message: `4.4.7 ${cmd} timed out after ${Math.round(timeoutMs / 1000)} s${tail}` });
      if (code === 0) return finish({ outcome: 'ok', message: `2.0.0 ${cmd} accepted the message` });
      if (code === null) return finish({ outcome: 'tempfail', message: `4.3.0 ${cmd} was killed by ${signal}${tail}` });
      const known = SYSEXITS[code];
      if (!known) return finish({ outcome: 'tempfail', message: `4.3.0 ${cmd} exited with ${code} (not a sysexits code; will retry)${tail}` });
      const [status, meaning] = known;
      finish({ outcome: TEMPORARY.has(code) ? 'tempfail' : 'permfail', message: `${status} ${cmd} exited with ${code} (${meaning})${tail}` });
    });

    // A read error of the stored message must not look like its end to the agent, which would
    // then deliver half a message: kill it before pipeline() closes its stdin. This listener
    // runs before pipeline's own, which is added after it. (Other errors here are the agent
    // closing its stdin early, which its exit code answers for.)
    const message = localMessage(body(), info);
    message.once('error', (err) => {
      if (!(err instanceof MessageReadError)) return;
      readError = err;
      killAll();
    });
    child.stdin.on('error', () => undefined); // an agent that exits early closes its stdin
    pipeline(message, child.stdin, () => undefined);
  });
}
