// `tidemail fetch [ACCOUNT]`: fetch POP3 mailboxes now (accounts on online routes, or the one
// named "ROUTE/USER"), through the daemon.

import { TempFailError } from '../errors.js';
import type { FetchResult } from '../fetch/pop3.js';
import { cliContext, takeConfigOption } from './context.js';
import { EX } from './exit.js';

export async function runFetch(argv: string[]): Promise<number> {
  const args = [...argv];
  const ctx = cliContext(takeConfigOption(args));
  const r = (await ctx.ask({ cmd: 'fetch', account: args[0] }, 30 * 60_000)) as Record<string, FetchResult> | null;
  if (r === null) throw new TempFailError('the daemon is not running: start it (tidemail daemon) and try again');
  let rc: number = EX.OK;
  for (const [name, res] of Object.entries(r)) {
    if (res.error) {
      rc = EX.TEMPFAIL;
      process.stdout.write(`${name}: ${res.error}\n`);
    } else {
      process.stdout.write(`${name}: ${res.fetched} fetched (${res.bytes} bytes), ${res.deleted} deleted on the server, ${res.skipped} skipped\n`);
    }
  }
  return rc;
}
