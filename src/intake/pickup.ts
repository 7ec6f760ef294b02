// The maildrop pickup as an intake source: files that `sendmail`, `sendmail -bs`, `rmail` and
// inetd `smtpd` left in the maildrop (judged by src/queue/maildrop.ts) go through the one
// pipeline. Their bare local addresses ("From: root (Cron Daemon)") are qualified with our host
// name, and the checks that apply to local submissions (DKIM signing) run on them.

import type { Check, CheckContext } from '../checks/check.js';
import type { CheckPlan } from '../checks/registry.js';
import type { Config } from '../config/schema.js';
import { log } from '../log/log.js';
import { rfc5322Date } from '../message/date.js';
import { pickupMaildrop, type PickedUp } from '../queue/maildrop.js';
import { PickupSpace, type PickupWait } from '../queue/maildrop-space.js';
import type { QueueStore } from '../queue/store.js';
import { submit, type IntakeTarget } from './pipeline.js';

/** The data checks that also judge local users' mail (DKIM signing). */
export function localSubmissionChecks(plan: CheckPlan | null): Check[] {
  return plan?.data.filter((c) => c.localSubmissions) ?? [];
}

/** Queues one picked-up file through the pipeline. */
export async function submitPickedUp(target: IntakeTarget, m: PickedUp, o: { hostname: string; checks: readonly Check[] }): Promise<string> {
  const { hostname } = o;
  return submit(target, {
    kind: 'pickup',
    hostname,
    trace: (id) => {
      let lines = `Received: by ${hostname} (tidemail pickup, from userid ${m.uid})\r\n\tid ${id}; ${rfc5322Date()}\r\n`;
      if (m.claimed !== undefined) {
        const claimed = m.claimed === '' ? '<>' : m.claimed;
        lines += `X-Authentication-Warning: ${hostname}: ${m.login ?? `uid ${m.uid}`} set sender to ${claimed} using -f\r\n`;
        log.warn(id, 'maildrop: sender not allowed for this user; rewritten', { claimed: `<${claimed}>`, from: `<${m.sender}>`, uid: m.uid, ...(m.login ? { user: m.login } : {}) });
      }
      return lines;
    },
    qualifyHeaders: true,
    checks: o.checks,
    context: (msg): CheckContext => ({
      phase: 'data', sessionId: `pickup-${msg.queueId}`, listener: 'pickup', trusted: true, connection: {}, transaction: {},
      clientAddress: '127.0.0.1', sender: m.sender, recipients: m.recipients, tls: false, ...msg,
    }),
    endsSession: true,
    onRefusal: 'queue', // sendmail has told the user the message was accepted
    logFields: { uid: m.uid },
  }, { sender: m.sender, recipients: m.recipients, via: m.via, client: `uid=${m.uid}`, origin: m.origin }, m.body);
}

/** What the daemon's pickup needs from it; read at each scan, so a reload applies at once. */
export interface PickupDeps {
  config(): Config;
  checks(): CheckPlan | null;
  /** Only asked whether a file was queued already; the message itself goes to `target`. */
  store: Pick<QueueStore, 'hasOrigin'>;
  target: IntakeTarget;
}

/**
 * While files wait for free space (queue/maildrop-space.ts), the maildrop is looked at this
 * often: freeing space makes no inotify event, and a minute's scan is long for cron's mail.
 * A look while waiting costs a statfs and a readdir.
 */
export const SPACE_POLL_MS = 5_000;

/** Imports maildrop files; concurrent pokes coalesce into one more scan. */
export class MaildropPickup {
  private picking: Promise<void> | null = null;
  private repick = false;
  /** Kept across scans: it logs when the pickup starts and stops waiting for space, once each. */
  private readonly space = new PickupSpace();
  private poll: NodeJS.Timeout | null = null;
  private stopped = false;

  constructor(private readonly deps: PickupDeps) {}

  /** Set while maildrop files wait for free space (tidemail status). */
  get waiting(): PickupWait | null {
    return this.space.waiting;
  }

  run(): Promise<void> {
    if (this.picking) {
      this.repick = true;
      return this.picking;
    }
    this.picking = (async () => {
      do {
        this.repick = false;
        const config = this.deps.config();
        const checks = localSubmissionChecks(this.deps.checks());
        await pickupMaildrop(config, this.deps.store, {
          submit: async (m) => void (await submitPickedUp(this.deps.target, m, { hostname: config.hostname, checks })),
          space: this.space,
        });
      } while (this.repick);
    })().finally(() => {
      this.picking = null;
      if (this.space.waiting && !this.poll && !this.stopped) {
        this.poll = setTimeout(() => {
          this.poll = null;
          void this.run();
        }, SPACE_POLL_MS);
        this.poll.unref();
      }
    });
    return this.picking;
  }

  /** Resolves when a scan in progress is over. */
  async idle(): Promise<void> {
    await this.picking;
  }

  /** No more polls for space (the daemon's stop). */
  stop(): void {
    this.stopped = true;
    if (this.poll) clearTimeout(this.poll);
    this.poll = null;
  }
}
