// Greylisting (RFC 6647): the first time a (client network, sender, recipient) triplet is seen,
// RCPT gets a 450; a real MTA retries after a few minutes and passes, most spam bots never do.
//
// Triplets live in their own SQLite file, `greylist.sqlite` in the state dir, so they survive
// restarts and never touch the queue database. The client is taken per /24 (IPv4) or /64 (IPv6)
// network because big senders retry from another address of the same pool.
//
// Let through without waiting: trusted and authenticated clients, clients on a DNS allow list
// (dnswl, in the connection notes) and senders whose SPF passed for this very MAIL FROM (the
// transaction notes). Never a DKIM pass: it is known only at the end of DATA, after the RCPT this
// decides on, and one from an earlier message on the connection says nothing about this one.

import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { ipv6Network64, plainAddress } from '../config/cidr.js';
import { log } from '../log/log.js';
import type { Db } from '../queue/db.js';
import type { Check, CheckContext, Verdict } from './check.js';
import { NEXT } from './check.js';
import type { CheckEnv } from './registry.js';

export interface GreylistOptions {
  /** How long a new triplet must wait before a retry passes. */
  delayMs: number;
  /** A triplet not retried successfully within this time after it was first seen is forgotten. */
  expireMs: number;
  /** A passed triplet not seen for this long is forgotten (and greylisted again). */
  passExpireMs: number;
}

/** The client's network: 192.0.2.0/24 or 2001:db8:1:2::/64 (as text, for the key). */
export function clientNetwork(address: string): string {
  const a = plainAddress(address);
  if (net.isIPv4(a)) return a.split('.').slice(0, 3).join('.') + '.0/24';
  return ipv6Network64(a) ?? a;
}

/** Notes that say another check already vouched for the client or this sender. */
function vouchedFor(ctx: CheckContext): string | null {
  if (ctx.trusted) return 'trusted';
  if (ctx.authUser) return 'authenticated';
  if (ctx.connection.dnswl === true) return 'dnswl';
  if (ctx.transaction?.spf === 'pass') return 'spf';
  return null;
}

interface Row {
  first_seen: number;
  last_seen: number;
  passed_at: number | null;
}

// Numbered migrations by PRAGMA user_version (queue/migrate.ts), never edited once released.
// 1: the unversioned schema of 0.1.0, created IF NOT EXISTS so an earlier file is recognised.
const SCHEMA = `
CREATE TABLE IF NOT EXISTS triplets (
  network TEXT NOT NULL,
  sender TEXT NOT NULL,
  recipient TEXT NOT NULL,
  first_seen INTEGER NOT NULL,
  last_seen INTEGER NOT NULL,
  passed_at INTEGER,
  PRIMARY KEY (network, sender, recipient)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS triplets_last_seen ON triplets (last_seen);
`;

/** The triplet store: one SQLite file, one writer at a time (this process). */
export class Greylist {
  private chain: Promise<unknown> = Promise.resolve();
  private sweeper: NodeJS.Timeout | null = null;

  private constructor(
    private readonly db: Db,
    private readonly opts: GreylistOptions,
    private readonly now: () => number,
  ) {}

  static async open(file: string, opts: GreylistOptions, now: () => number = Date.now): Promise<Greylist> {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    const [{ Db }, { migrate }, { stateError }] = await Promise.all([import('../queue/db.js'), import('../queue/migrate.js'), import('../queue/state-error.js')]);
    let db: Db | undefined;
    try {
      db = await Db.open(file);
      // Triplets are not precious: a lost last write only means one more 450.
      await db.exec('PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=5000;');
      await migrate(db, file, [SCHEMA]);
    } catch (err) {
      await db?.close().catch(() => undefined);
      throw stateError(err, file);
    }
    const g = new Greylist(db, opts, now);
    await g.sweep();
    g.sweeper = setInterval(() => void g.sweep().catch((err) => log.warn(null, 'greylist: cleanup failed', { error: (err as Error).message })), 3_600_000);
    g.sweeper.unref();
    return g;
  }

  /** One operation at a time, so a read-then-write is never interleaved with another. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.chain.then(fn, fn);
    this.chain = p.catch(() => undefined);
    return p;
  }

  /** Forgets expired triplets. */
  sweep(): Promise<number> {
    const now = this.now();
    return this.serial(() =>
      this.db.run('DELETE FROM triplets WHERE (passed_at IS NULL AND first_seen < ?) OR (passed_at IS NOT NULL AND last_seen < ?)', [now - this.opts.expireMs, now - this.opts.passExpireMs]),
    );
  }

  /** Milliseconds the triplet must still wait; 0 = pass. Records the attempt. */
  check(network: string, sender: string, recipient: string): Promise<number> {
    return this.serial(async () => {
      const now = this.now();
      const key = [network, sender, recipient];
      const row = await this.db.get<Row>('SELECT first_seen, last_seen, passed_at FROM triplets WHERE network = ? AND sender = ? AND recipient = ?', key);
      const expired = !row || (row.passed_at === null ? now - row.first_seen > this.opts.expireMs : now - row.last_seen > this.opts.passExpireMs);
      if (expired) {
        await this.db.run('INSERT OR REPLACE INTO triplets (network, sender, recipient, first_seen, last_seen, passed_at) VALUES (?, ?, ?, ?, ?, NULL)', [...key, now, now]);
        return this.opts.delayMs;
      }
      if (row.passed_at !== null || now - row.first_seen >= this.opts.delayMs) {
        await this.db.run('UPDATE triplets SET last_seen = ?, passed_at = COALESCE(passed_at, ?) WHERE network = ? AND sender = ? AND recipient = ?', [now, now, ...key]);
        return 0;
      }
      await this.db.run('UPDATE triplets SET last_seen = ? WHERE network = ? AND sender = ? AND recipient = ?', [now, ...key]);
      return row.first_seen + this.opts.delayMs - now;
    });
  }

  async close(): Promise<void> {
    if (this.sweeper) clearInterval(this.sweeper);
    await this.chain;
    await this.db.close();
  }
}

/** `now` is for tests, which step a clock instead of waiting out the delays. */
export async function createCheck(env: CheckEnv, now: () => number = Date.now): Promise<Check> {
  const o = env.options;
  const opts: GreylistOptions = {
    delayMs: o.duration('delay', 5 * 60_000),
    expireMs: o.duration('expire', 2 * 86_400_000),
    passExpireMs: o.duration('pass_expire', 35 * 86_400_000),
  };
  if (opts.expireMs <= opts.delayMs) o.fail('expire', 'is not longer than delay: no retry could ever pass', 'make expire much longer than delay (default 2d vs 5m)');
  o.rejectUnknown();
  const file = path.join(env.config.stateDir, 'greylist.sqlite');
  // Opened at the first RCPT, not here: `tidemail config check` builds the checks too, and must
  // not create state files (as root) on the way. A failure to open throws → 451, never a pass.
  let store: Promise<Greylist> | null = null;
  const getStore = () => {
    if (!store) {
      store = Greylist.open(file, opts, now);
      store.catch(() => (store = null)); // retry at the next RCPT
    }
    return store;
  };
  return {
    name: 'greylist',
    phases: ['rcpt'],
    async run(_phase, ctx): Promise<Verdict> {
      if (vouchedFor(ctx) || ctx.recipient === undefined) return NEXT;
      const wait = await (await getStore()).check(clientNetwork(ctx.clientAddress), (ctx.sender ?? '').toLowerCase(), ctx.recipient.toLowerCase());
      if (wait <= 0) return NEXT;
      const seconds = Math.ceil(wait / 1000);
      log.info(ctx.queueId ?? null, 'greylisted', { client: ctx.clientAddress, from: `<${ctx.sender ?? ''}>`, to: `<${ctx.recipient}>`, wait: seconds });
      return { action: 'tempfail', code: 450, enhanced: '4.7.1', text: `Greylisted, try again in ${seconds} second${seconds === 1 ? '' : 's'}` };
    },
    async close() {
      const s = store;
      store = null;
      if (s) await (await s.catch(() => null))?.close();
    },
  };
}
