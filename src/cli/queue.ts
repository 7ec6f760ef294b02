// mailq, `tidemail queue list|show|remove|hold|release|requeue|flush`, runq, mailrm.
// Through the control socket when the daemon runs; directly on the database when it does not.

import fs from 'node:fs';
import { ConfigError, UsageError } from '../errors.js';
import { DeliveryRunner } from '../deliver/runner.js';
import { createLocalLane, type LocalDelivery } from '../deliver/local.js';
import { isEnvelopeId, isMessageId } from '../queue/ids.js';
import { printable, printableLines } from '../log/printable.js';
import { maildropDir, pickupMaildrop } from '../queue/maildrop.js';
import { maildropCounts } from '../queue/maildrop-leftovers.js';
import type { QueuedMessage } from '../queue/store.js';
import type { SqliteQueueStore } from '../queue/sqlite.js';
import { allChecks, buildChecks } from '../checks/registry.js';
import { submitBounce } from '../intake/bounce.js';
import { localSubmissionChecks, submitPickedUp } from '../intake/pickup.js';
import type { IntakeTarget } from '../intake/pipeline.js';
import { localRecipientCheck } from '../smtp/recipient-check.js';
import path from 'node:path';
import { NoPermissionError, whoAmI } from '../control/client.js';
import { recordAdminAction } from '../queue/events.js';
import { formatFields } from '../log/log.js';
import { loadRoutes } from '../routes/load.js';
import { withRelayRoutes } from '../relay/routes.js';
import { chownTree, dropPrivileges, resolveRunUser } from '../privileges.js';
import { DeliveryHelper } from '../privsep/client.js';
import { cliContext, takeConfigOption, type CliContext } from './context.js';
import { EX } from './exit.js';

type Direct<T> = (store: SqliteQueueStore) => Promise<T>;

/** Runs a request on the daemon, or `direct` on the database when no daemon answers. */
async function viaDaemonOrStore<T>(ctx: CliContext, req: Parameters<CliContext['ask']>[0], direct: Direct<T>): Promise<T> {
  const r = await ctx.ask(req);
  if (r !== null) return r as T;
  // The database is the daemon's (0600): an ordinary user sees the queue only through it.
  const db = path.join(ctx.config.stateDir, 'queue.sqlite');
  if (fs.existsSync(db)) {
    try {
      fs.accessSync(db, fs.constants.R_OK | fs.constants.W_OK);
    } catch {
      throw new NoPermissionError(`the queue (${db}) is readable only by root and the daemon's user, and the daemon is not running to answer for it; start the daemon, or run this as root`);
    }
  }
  const store = await ctx.openStore();
  try {
    return await direct(store);
  } finally {
    await store.close();
  }
}

export function formatMailq(messages: readonly QueuedMessage[], maildropWaiting: number): string {
  if (!messages.length) {
    return maildropWaiting ? `Mail queue is empty; ${maildropWaiting} message(s) wait in the maildrop for the daemon\n` : 'Mail queue is empty\n';
  }
  const out = ['-Queue ID-        --Size-- ----Arrival Time---- -Sender/Recipient-------'];
  let bytes = 0;
  for (const m of messages) {
    bytes += m.size;
    const held = m.recipients.every((r) => r.status === 'hold') ? '!' : ' ';
    const when = new Date(m.created).toString().slice(0, 24);
    out.push(`${m.msgid}${held} ${String(m.size).padStart(8)} ${when}  ${m.sender || 'MAILER-DAEMON'}`);
    const byError = new Map<string, string[]>();
    for (const r of m.recipients) {
      const why = r.status === 'hold' ? 'on hold' : r.lastError ?? '';
      byError.set(why, [...(byError.get(why) ?? []), r.recipient]);
    }
    for (const [why, rcpts] of byError) {
      if (why) out.push(`${' '.repeat(46)}(${printable(why)})`); // a remote reply: one line, escaped
      for (const r of rcpts) out.push(`${' '.repeat(46)}${r}`);
    }
    out.push('');
  }
  out.push(`-- ${Math.ceil(bytes / 1024)} Kbytes in ${messages.length} Request${messages.length === 1 ? '' : 's'}.`);
  return out.join('\n') + '\n';
}

function countMaildrop(ctx: CliContext): number {
  return maildropCounts(maildropDir(ctx.config.stateDir))?.waiting ?? 0; // null: not readable by this user
}

export async function runMailq(argv: string[]): Promise<number> {
  const args = [...argv];
  const ctx = cliContext(takeConfigOption(args));
  const messages = await viaDaemonOrStore(ctx, { cmd: 'list' }, (s) => s.listMessages());
  process.stdout.write(printableLines(formatMailq(messages, countMaildrop(ctx))));
  return EX.OK;
}

function needId(sub: string, id: string | undefined): string {
  if (!id || !(isMessageId(id) || isEnvelopeId(id))) throw new UsageError(`usage: tidemail queue ${sub} ID (a 16-digit message id or 20-digit recipient id from mailq)`);
  return id.toUpperCase();
}

export async function runQueueCommand(argv: string[]): Promise<number> {
  const args = [...argv];
  const ctx = cliContext(takeConfigOption(args));
  const [sub = 'list', id] = args;
  switch (sub) {
    case 'list':
      return runMailq(ctx.config.file ? ['--config', ctx.config.file] : []);
    case 'show': {
      const m = await viaDaemonOrStore(ctx, { cmd: 'show', id: needId(sub, id) }, (s) => s.getMessage(needId(sub, id)));
      // The control client reports an empty (null) answer as `true`.
      if (!m || typeof m !== 'object') {
        process.stderr.write(`tidemail: no message ${id} in the queue\n`);
        return EX.NOINPUT;
      }
      process.stdout.write(printableLines(formatShow(m as QueuedMessage)));
      return EX.OK;
    }
    case 'remove':
    case 'hold':
    case 'release':
    case 'requeue': {
      const qid = needId(sub, id);
      // Releasing also makes the message due now: an admin who releases mail wants it to go,
      // not to wait out a retry time from before it was held. requeue does exactly that.
      const cmd = sub === 'release' ? 'requeue' : sub;
      const by = whoAmI();
      const direct: Direct<number | boolean> = async (s) => {
        const n = cmd === 'remove' ? await s.removeMessage(qid) : cmd === 'hold' ? await s.hold(qid) : await s.requeue(qid);
        // Who did it goes into the message's history (`tidemail log ID`), as the daemon records it.
        const event = `${sub === 'remove' ? 'removed' : sub === 'hold' ? 'held' : sub === 'release' ? 'released' : 'requeued'} by admin`;
        if (n) await recordAdminAction(s.writer, { id: qid, event, fields: formatFields({ by, ...(typeof n === 'number' ? { recipients: n } : {}) }).slice(1) });
        return n;
      };
      const n = await viaDaemonOrStore(ctx, { cmd: sub === 'release' ? 'release' : cmd, id: qid, by }, direct);
      if (!n) {
        process.stderr.write(`tidemail: no message ${qid} in the queue\n`);
        return EX.NOINPUT;
      }
      process.stdout.write(`${qid}: ${sub === 'remove' ? 'removed' : sub === 'hold' ? 'held' : sub === 'release' ? 'released' : 'requeued'}\n`);
      return EX.OK;
    }
    case 'flush':
      return flush(ctx, id);
    case 'salvage':
      return (await import('./queue-salvage.js')).runSalvage(ctx);
    default:
      throw new UsageError(`unknown queue command "${sub}" (list, show, remove, hold, release, requeue, flush, salvage)`);
  }
}

/** runq: ask the daemon to try everything now; without a daemon, deliver in this process. */
async function flush(ctx: CliContext, route?: string): Promise<number> {
  const r = (await ctx.ask({ cmd: 'flush', route })) as { requeued: number } | null;
  if (r) {
    process.stdout.write(`queue flush started (${r.requeued} recipient(s) due now)\n`);
    return EX.OK;
  }
  // As the daemon does: as root the checks (DKIM keys) are read before root is given up; anyone
  // else is first told whether they may open the queue at all (77), not about a key they cannot read.
  let local: LocalDelivery | null = null;
  const buildPlan = () => buildChecks(ctx.config, { isLocal: (a) => local!.isLocal(a), checkRecipient: (a) => localRecipientCheck(local!.resolver)(a) });
  let plan = process.getuid?.() === 0 ? await buildPlan() : null;
  const helper = await becomeRunUser(ctx);
  const store = await ctx.openStore();
  // The foreground run's attempts belong in the message histories (`tidemail log`) too.
  (await import('../queue/events.js')).recordEvents(store.writer);
  try {
    plan ??= await buildPlan();
    local = createLocalLane(ctx.config, (m, a) => store.addRecipients(m, a), helper);
    // The daemon's intake: cron's mail picked up here is signed, archived and qualified alike,
    // and so are the bounces this run queues.
    const hostname = ctx.config.hostname;
    const checks = localSubmissionChecks(plan);
    const target: IntakeTarget = { openMessage: () => store.openMessage(), archive: ctx.config.local.archive, checkTimeoutMs: ctx.config.checks.timeoutMs };
    await pickupMaildrop(ctx.config, store, { submit: async (m) => void (await submitPickedUp(target, m, { hostname, checks })) });
    await store.requeue(null);
    const runner = new DeliveryRunner(store, ctx.config, withRelayRoutes(ctx.config, loadRoutes(ctx.config.configDir)), () => true, local);
    runner.queueNoticesWith((n) => submitBounce(target, { hostname, checks }, n));
    await runner.drain();
    await runner.stop();
    const left = await store.listMessages();
    process.stdout.write(`queue run done; ${left.length} message(s) still queued\n`);
  } finally {
    await store.close();
    helper?.stop();
    if (plan) await Promise.all(allChecks(plan).map((c) => c.close?.().catch(() => undefined)));
  }
  return EX.OK;
}

/**
 * Without a daemon this process delivers, so as root it gives up root first, exactly as the
 * daemon does: pipes and files from the aliases file run as the daemon's user, never as root,
 * and the queue files it touches stay that user's; users' own mail goes through the same root
 * delivery helper the daemon keeps (src/privsep), forked before root is given up.
 */
async function becomeRunUser(ctx: CliContext): Promise<DeliveryHelper | null> {
  let runAs;
  try {
    runAs = resolveRunUser(ctx.config.user, ctx.config.userWhere);
  } catch (err) {
    throw new ConfigError(`${(err as Error).message}\n  (runq delivers as the daemon's user when no daemon runs)`, { cause: err });
  }
  if (!runAs) return null;
  process.umask(0o077);
  fs.mkdirSync(ctx.config.stateDir, { recursive: true });
  chownTree(ctx.config.stateDir, runAs);
  const helper = await DeliveryHelper.start(ctx.config.local, runAs);
  dropPrivileges(runAs);
  return helper;
}

export async function runMailrm(argv: string[]): Promise<number> {
  const args = [...argv];
  const cfg = takeConfigOption(args);
  if (!args.length) throw new UsageError('usage: mailrm ID...');
  let rc: number = EX.OK;
  for (const id of args) {
    const r = await runQueueCommand(['remove', id, ...(cfg ? ['--config', cfg] : [])]);
    if (r !== EX.OK) rc = r;
  }
  return rc;
}

function formatShow(m: QueuedMessage): string {
  const lines = [
    `Queue ID: ${m.msgid}`,
    `Sender:   <${m.sender}>`,
    `Arrived:  ${new Date(m.created).toISOString()} (via ${m.via})`,
    `Size:     ${m.size} bytes`,
    'Recipients:',
  ];
  for (const r of m.recipients) {
    lines.push(`  ${r.envId} <${r.recipient}> ${r.status}, ${r.attempts} attempt(s), next ${new Date(r.nextAttempt).toISOString()}`);
    if (r.lastError) lines.push(`      last error: ${printable(r.lastError)}`);
  }
  return lines.join('\n') + '\n';
}
