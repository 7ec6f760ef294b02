// `tidemail queue salvage`: rebuild queue.sqlite from the readable part of a damaged one
// (queue/salvage.ts). Only with the daemon stopped: it renames the file the daemon has open.

import { salvageQueue } from '../queue/salvage.js';
import type { CliContext } from './context.js';
import { EX } from './exit.js';

export async function runSalvage(ctx: CliContext): Promise<number> {
  if ((await ctx.ask({ cmd: 'ping' })) !== null) {
    process.stderr.write('tidemail: the daemon is running: stop the daemon first (systemctl stop tidemail), then run `tidemail queue salvage` again\n');
    return EX.TEMPFAIL;
  }
  const r = await salvageQueue(ctx.config.stateDir);
  const lines = [
    `salvaged ${r.messagesSaved} of ${r.messagesFound} message(s) (${r.recipientsSaved} recipient(s)) into ${r.queue}`,
    `the damaged file is kept as ${r.broken}`,
  ];
  if (r.rowsUnreadable) lines.push(`${r.rowsUnreadable} row(s) could not be read`);
  if (r.lost.length) lines.push(`${r.lost.length} message(s) could not be recovered whole: ${r.lost.join(' ')}`, `what was readable of them is in ${r.partialDir}`);
  lines.push('start the daemon to deliver the salvaged mail');
  process.stdout.write(lines.join('\n') + '\n');
  return EX.OK;
}
