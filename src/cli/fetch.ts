// `tidemail fetch [ACCOUNT]`: fetch POP3 mailboxes now (accounts on online routes, or the one
// named "ROUTE/USER"), through the daemon. On a terminal (stderr is a TTY) it shows how far each
// running account is — "isp/me: 3 of 10 messages, 4.2 MiB" — by asking the daemon for its status
// while it waits; otherwise (cron, scripts, the daemon itself) it prints only the results.

import { TempFailError } from '../errors.js';
import type { FetchResult } from '../fetch/pop3.js';
import type { AccountState } from '../fetch/scheduler.js';
import { cliContext, takeConfigOption, type CliContext } from './context.js';
import { EX } from './exit.js';
import { printable } from '../log/printable.js';

const PROGRESS_EVERY_MS = 200;

export async function runFetch(argv: string[]): Promise<number> {
  const args = [...argv];
  const ctx = cliContext(takeConfigOption(args));
  const stopProgress = process.stderr.isTTY ? showProgress(ctx) : () => undefined;
  let r: Record<string, FetchResult> | null;
  try {
    r = (await ctx.ask({ cmd: 'fetch', account: args[0] }, 30 * 60_000)) as Record<string, FetchResult> | null;
  } finally {
    await stopProgress();
  }
  if (r === null) throw new TempFailError('the daemon is not running: start it (tidemail daemon) and try again');
  let rc: number = EX.OK;
  for (const [name, res] of Object.entries(r)) {
    if (res.error) {
      // A refused login or certificate needs a person (EX_CONFIG), not a retry.
      rc = Math.max(rc, res.authFailed || res.tlsFailed ? EX.CONFIG : EX.TEMPFAIL);
      process.stdout.write(`${name}: ${printable(res.error)}\n`); // a POP3 server's words
    } else {
      const skipped = res.skipped ? `, ${res.skipped} over max_size left on the server${res.headersOnly ? ` (${res.headersOnly} as headers only)` : ''}` : '';
      const refused = res.refused ? `, ${res.refused} refused by checks and left on the server (see the log)` : '';
      process.stdout.write(`${name}: ${res.fetched} fetched (${res.bytes} bytes), ${res.deleted} deleted on the server${skipped}${refused}\n`);
    }
  }
  return rc;
}

/** Polls the daemon's status and redraws one line on stderr; the returned function clears it. */
function showProgress(ctx: CliContext): () => Promise<void> {
  let shown = '';
  let stopped = false;
  const tick = async () => {
    const st = (await ctx.ask({ cmd: 'status' }, 5000).catch(() => null)) as { fetch?: AccountState[] } | null;
    if (stopped) return;
    const line = (st?.fetch ?? [])
      .filter((f) => f.running && f.progress)
      .map((f) => `${f.account}: ${f.progress!.done} of ${f.progress!.total} messages, ${bytes(f.progress!.bytes)}`)
      .join('; ');
    if (line === shown) return;
    shown = line;
    process.stderr.write(`\r\x1b[K${line}`);
  };
  let pending = Promise.resolve();
  const timer = setInterval(() => (pending = pending.then(tick)), PROGRESS_EVERY_MS);
  return async () => {
    clearInterval(timer);
    await pending;
    stopped = true;
    if (shown) process.stderr.write('\r\x1b[K');
  };
}

function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1048576).toFixed(1)} MiB`;
}
