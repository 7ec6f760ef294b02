// `tidemail log ID|ADDRESS|--since 1h`: where did my mail go. Reads the history that the daemon
// keeps in the queue database (queue/events.ts), so it works with the daemon down and after the
// log files have rotated: received from whom, each route tried and the next hop's reply, and
// whether it was delivered, bounced, or is still waiting (and why).

import { eachArg } from './args.js';
import fs from 'node:fs';
import path from 'node:path';
import { parseDuration } from '../config/units.js';
import { UsageError } from '../errors.js';
import { readHistories, type MessageHistory } from '../queue/events.js';
import { isEnvelopeId, isMessageId, messageIdOf, recipientPartOf } from '../queue/ids.js';
import { cliContext, takeConfigOption } from './context.js';
import { EX } from './exit.js';
import { NoPermissionError } from '../control/client.js';
import { printableJson, printableLines } from '../log/printable.js';

const USAGE = 'usage: tidemail log ID|ADDRESS [--since 1h] [--json]   or   tidemail log --since 1h';

interface LogArgs {
  id?: string;
  address?: string;
  since?: number;
  json: boolean;
}

function parseArgs(args: string[]): LogArgs {
  const out: LogArgs = { json: false };
  eachArg(args, USAGE, ({ flag, raw: a, value }) => {
    if (a === '--json') out.json = true;
    else if (flag === '--since') {
      const v = value();
      const ms = parseDuration(v);
      if (ms === null) throw new UsageError(`--since needs a duration such as 30m, 1h or 2d (got ${v})\n${USAGE}`);
      out.since = Date.now() - ms;
    } else if (a.startsWith('-')) throw new UsageError(`unknown option ${a}\n${USAGE}`);
    else if (out.id || out.address) throw new UsageError(`one ID or ADDRESS at a time\n${USAGE}`);
    else if (isMessageId(a) || isEnvelopeId(a)) out.id = a.toUpperCase();
    else if (/^<?[^\s<>@]+@[^\s<>@]+>?$/.test(a) || /^<?[^\s<>@]+>?$/.test(a)) out.address = a.replace(/^<|>$/g, '');
    else throw new UsageError(`"${a}" is neither a queue id (16 or 20 hex digits) nor an address\n${USAGE}`);
  });
  if (!out.id && !out.address && out.since === undefined) throw new UsageError(USAGE);
  return out;
}

/** False only when the file is not there: one we may not even see (EACCES) is there, not ours. */
function present(file: string): boolean {
  try {
    fs.statSync(file);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== 'ENOENT';
  }
}

function readable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.R_OK);
    return true;
  } catch {
    return false;
  }
}

const when = (t: number) => new Date(t).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');

/** The last word on each recipient: delivered, bounced, or still queued (and why). */
function outcome(h: MessageHistory): string[] {
  const out: string[] = [];
  if (h.queued) {
    for (const r of h.queued.recipients) {
      const why = r.status === 'hold' ? 'on hold' : r.lastError ? `last error: ${r.lastError}` : 'not tried yet';
      out.push(`<${r.address}> still queued (${r.attempts} attempt(s), next ${when(r.nextAttempt)}; ${why})`);
    }
  }
  const done = new Map<string, string>();
  for (const e of h.events) {
    const to = /(?:^| )to=(<[^>]*>)/.exec(e.fields)?.[1];
    if (!to || !/^(delivered|bounced|refused in session)/.test(e.event)) continue;
    if (e.msgid !== h.msgid) continue;
    done.set(to, e.event);
  }
  for (const [to, what] of done) out.push(`${to} ${what}`);
  if (!out.length) out.push(h.events.some((e) => e.event === 'accepted') ? 'no delivery recorded yet' : 'no longer queued');
  return out;
}

function format(h: MessageHistory): string {
  const lines = [`${h.msgid}${h.queued ? `  from <${h.queued.sender}>, queued since ${when(h.queued.created)}` : ''}`];
  for (const e of h.events) {
    const who = e.envId && e.envId !== h.msgid ? `${recipientPartOf(e.envId)} ` : '';
    const other = e.msgid !== h.msgid ? `[${e.msgid}] ` : '';
    lines.push(`  ${when(e.t)}  ${e.level === 'info' ? '' : e.level.toUpperCase() + ' '}${who}${other}${e.event}${e.fields ? '  ' + e.fields : ''}`);
  }
  for (const o of outcome(h)) lines.push(`  => ${o}`);
  return lines.join('\n') + '\n';
}

export async function runLog(argv: string[]): Promise<number> {
  const args = [...argv];
  const ctx = cliContext(takeConfigOption(args));
  const q = parseArgs(args);
  const db = path.join(ctx.config.stateDir, 'queue.sqlite');
  if (!present(db)) {
    process.stderr.write(`tidemail: no queue database at ${db} (the daemon has not run with this configuration yet)\n`);
    return EX.NOINPUT;
  }
  let histories: MessageHistory[];
  let own = false;
  if (!readable(db)) {
    // The database is the daemon's (0600): an ordinary user gets the history of the messages
    // they submitted, through the daemon (control/commands.ts 'history').
    const r = (await ctx.ask({ cmd: 'history', proof: '', id: q.id, address: q.address, since: q.since })) as { histories: MessageHistory[] } | null;
    if (r === null) throw new NoPermissionError(`the message history (${db}) is readable only by root and the daemon's user; while the daemon runs, anyone may see the history of their own messages`);
    histories = r.histories;
    own = true;
  } else {
    try {
      histories = await readHistories(ctx.config.stateDir, q);
    } catch (err) {
      if (/no such table: events/.test((err as Error).message)) histories = []; // made by a version that kept no history
      // Readable but its WAL index is not ours to write (another user's state dir): as unreadable.
      else if (/SQLITE_READONLY|SQLITE_CANTOPEN|SQLITE_PERM/.test((err as Error).message)) throw new NoPermissionError(`the message history (${db}) can be read only by root and the daemon's user (this user may not write beside it: ${(err as Error).message})`);
      else throw err;
    }
  }
  // An id names one message; the bounce it caused (for=ID) is shown inside its history.
  if (q.id) {
    const main = histories.find((h) => h.msgid === messageIdOf(q.id!));
    if (main) {
      for (const h of histories) if (h !== main) main.events.push(...h.events);
      main.events.sort((a, b) => a.t - b.t);
      histories = [main];
    }
  }
  if (q.json) {
    process.stdout.write(printableJson(histories, 2) + '\n');
    return histories.length ? EX.OK : EX.NOINPUT;
  }
  if (!histories.length) {
    const what = q.id ? `message ${q.id}` : q.address ? `<${q.address}>` : 'any message';
    process.stderr.write(`tidemail: no history for ${what}${own ? ' among the messages you sent' : ''}${q.since !== undefined ? ` since ${when(q.since)}` : ''} (history is kept for 30 days)\n`);
    return EX.NOINPUT;
  }
  // Events carry remote replies (and older rows were stored unescaped): escape on the way out.
  process.stdout.write(printableLines(histories.map(format).join('\n')));
  return EX.OK;
}
