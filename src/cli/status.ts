// `tidemail status`: one screen on what is queued, why, and which routes are up.

import { loadRoutes } from '../routes/load.js';
import { describeTarget } from '../routes/profile.js';
import { queueSummary, type QueueSummary } from '../queue/summary.js';
import { cliContext, takeConfigOption } from './context.js';
import { EX } from './exit.js';

interface RouteStatus {
  name: string;
  target: string;
  online: boolean;
  since?: number;
  why?: string;
  queued?: number;
  lastError?: string | null;
  lastErrorAt?: number | null;
  delivered?: number;
}

interface DaemonStatus {
  pid: number;
  since: number;
  config: string | null;
  queue: QueueSummary;
  noRoute?: number;
  routes: RouteStatus[];
  fetch?: { account: string; route: string; lastRun: number | null; running: boolean; last: { fetched: number; error?: string } | null }[];
}

const ago = (t: number) => {
  const s = Math.round((Date.now() - t) / 1000);
  return s < 120 ? `${s}s ago` : s < 7200 ? `${Math.round(s / 60)}m ago` : `${Math.round(s / 3600)}h ago`;
};

export async function runStatus(argv: string[]): Promise<number> {
  const args = [...argv];
  const ctx = cliContext(takeConfigOption(args));
  const st = (await ctx.ask({ cmd: 'status' }, 10_000)) as DaemonStatus | null;
  const out: string[] = [];
  let queue: QueueSummary;
  let routes: RouteStatus[];
  if (st) {
    out.push(`daemon:  running (pid ${st.pid}, up since ${new Date(st.since).toISOString()})`);
    queue = st.queue;
    routes = st.routes;
  } else {
    out.push('daemon:  NOT running (start it: tidemail daemon, or systemctl start tidemail)');
    const store = await ctx.openStore();
    queue = queueSummary(await store.listMessages());
    await store.close();
    routes = loadRoutes(ctx.config.configDir).map((r) => ({ name: r.name, target: describeTarget(r), online: r.online.always }));
  }
  out.push(`config:  ${ctx.config.file ?? 'embedded local-only default'}`);
  out.push(`queue:   ${queue.messages} message(s), ${queue.recipients} recipient(s), ${queue.held} on hold, ${Math.ceil(queue.bytes / 1024)} KiB` +
    (queue.oldest ? `, oldest ${ago(queue.oldest)}` : ''));
  for (const [why, n] of Object.entries(queue.reasons).sort((a, b) => b[1] - a[1]).slice(0, 8)) out.push(`         ${String(n).padStart(5)} × ${why}`);
  out.push(`routes:  ${routes.length ? '' : 'none (mail for other hosts waits; add a route under routes/)'}`);
  for (const r of routes) {
    const since = r.since ? ` since ${ago(r.since)}` : '';
    out.push(`  ${r.name.padEnd(14)} ${r.online ? 'ONLINE ' : 'offline'}${since}  ${r.target}`);
    if (r.why) out.push(`  ${''.padEnd(14)} why: ${r.why}`);
    const parts = [`${r.queued ?? 0} queued`, ...(r.delivered ? [`${r.delivered} delivered`] : [])];
    out.push(`  ${''.padEnd(14)} ${parts.join(', ')}`);
    if (r.lastError) out.push(`  ${''.padEnd(14)} last error${r.lastErrorAt ? ` (${ago(r.lastErrorAt)})` : ''}: ${r.lastError}`);
  }
  if (st?.noRoute) out.push(`  ${String(st.noRoute).padStart(5)} recipient(s) match no route`);
  if (st?.fetch?.length) {
    out.push('fetch:');
    for (const f of st.fetch) {
      const when = f.running ? 'running now' : f.lastRun ? `last run ${ago(f.lastRun)}` : 'not run yet';
      const what = f.last ? (f.last.error ? `FAILING: ${f.last.error}` : `${f.last.fetched} fetched`) : '';
      out.push(`  ${f.account.padEnd(20)} ${when}${what ? `, ${what}` : ''}`);
    }
  }
  process.stdout.write(out.join('\n') + '\n');
  return EX.OK;
}
