// A link-down between our end of the data and the server's reply. The server may already have
// the message (its 250 is on the way, or lost on the dead link): cutting the session then and
// sending the message again later is a duplicate of our own making whenever the TCP connection
// would have survived — `tidemail link down` by hand, a detector that was wrong, or a carrier
// that comes back with our address unchanged, when the server's TCP resends the lost reply on
// the old connection. So such a session is held, not cut (as Postfix's smtp client waits
// smtp_data_done_timeout whatever the link does):
//  - while the link is down, for as long as the route's data_done_timeout allows (the deadline
//    in smtp-deadline.ts still runs; the progress watchdog is paused: nothing can pass);
//  - when it is up again: within 2 s if our end's address is gone from every interface (a new
//    address, e.g. an LTE reconnect: that connection can never hear from the server again),
//    else as long as the server's TCP may take to resend a reply lost while down — its
//    retransmission timer has backed off to about the time since the session was caught (every
//    outage since, with the short ups between: no ACK came), at most Linux's
//    TCP_RTO_MAX of 120 s — and a few seconds more.
// Only a reply that does not come then makes the delivery "interrupted" and a possible duplicate
// (at-least-once, README "Links").

import os from 'node:os';
import type { Socket } from 'node:net';
import { pauseProgress } from './progress-watchdog.js';

/** Linux's TCP_RTO_MAX: the longest a peer's TCP waits between two resends of a segment. */
const RTO_MAX_MS = 120_000;
/** After the longest resend interval, for the resent reply to arrive and be read. */
const UP_SLACK_MS = 5_000;
/** A local address missing at link-up is looked for once more after this, before the cut. */
const ADDRESS_RECHECK_MS = 2_000;

interface Held {
  /** Ends the wait: the session is dead (it is destroyed; its delivery ends "interrupted"). */
  cut: () => void;
  tcp: Socket | undefined;
  /** When the link-down caught it: the server's resend timer has backed off since then. */
  since: number;
  timer?: NodeJS.Timeout;
}

/** The local addresses on interfaces that are up (what a socket bound to one can still use). */
function upAddresses(): Set<string> {
  const out = new Set<string>();
  for (const list of Object.values(os.networkInterfaces())) for (const a of list ?? []) out.add(a.address);
  return out;
}

/** "::ffff:10.0.0.1" as os.networkInterfaces() lists it: "10.0.0.1". */
function plainAddress(a: string): string {
  return a.startsWith('::ffff:') && a.includes('.') ? a.slice(7) : a;
}

export class HeldAcrossLinkDown<K> {
  private readonly held = new Map<K, Held>();
  private downSince: number | null = null;

  constructor(
    private readonly now: () => number = Date.now,
    private readonly addresses: () => Set<string> = upAddresses,
  ) {}

  get size(): number {
    return this.held.size;
  }

  /** The link went down with `key`'s end of the data sent and its reply not in. */
  hold(key: K, tcp: Socket | undefined, cut: () => void): void {
    this.downSince ??= this.now();
    if (tcp) pauseProgress(tcp, true);
    this.held.set(key, { cut, tcp, since: this.now() });
  }

  /** The reply came, or the delivery ended otherwise: nothing more to decide for it. */
  release(key: K): void {
    const h = this.held.get(key);
    if (!h) return;
    clearTimeout(h.timer);
    if (h.tcp) pauseProgress(h.tcp, false);
    this.held.delete(key);
  }

  /** The link went down (again): the held sessions wait on, without a limit of ours. */
  linkDown(): void {
    this.downSince ??= this.now();
    for (const h of this.held.values()) {
      clearTimeout(h.timer);
      h.timer = undefined;
      if (h.tcp) pauseProgress(h.tcp, true);
    }
  }

  /** The daemon is stopping: no more waiting (the messages stay queued, "interrupted"). */
  cutAll(): void {
    for (const [key, h] of [...this.held]) {
      this.release(key);
      h.cut();
    }
  }

  /** The link is up: each held session gets the time a resent reply needs, or is cut now. */
  linkUp(): void {
    if (this.downSince === null) return;
    this.downSince = null;
    if (!this.held.size) return;
    const present = this.addresses();
    for (const [key, h] of [...this.held]) {
      // Counted from when this session was caught, not from the last link-down: on a flapping
      // link (down 110 s, up 1 s, down 1 s) the server's TCP has backed off for the whole time
      // (no ACK came in the short up), so its next resend is ~110 s away, not ~1 s; cutting at
      // the last outage + 5 s sent the message again while its 250 was still to come.
      const wait = Math.min(Math.max(0, this.now() - h.since), RTO_MAX_MS) + UP_SLACK_MS;
      if (h.tcp) pauseProgress(h.tcp, false);
      clearTimeout(h.timer);
      const cut = () => {
        this.release(key);
        h.cut();
      };
      const gone = (list: Set<string>) => {
        const local = h.tcp?.localAddress;
        return !!local && !list.has(plainAddress(local));
      };
      if (!gone(present)) {
        h.timer = setTimeout(cut, wait);
      } else {
        // An interface that has just come up may list its address a moment later: look again
        // before taking the connection for dead (cutting a live one is a duplicate).
        h.timer = setTimeout(() => {
          if (gone(this.addresses())) return cut();
          h.timer = setTimeout(cut, Math.max(0, wait - ADDRESS_RECHECK_MS));
          h.timer.unref();
        }, ADDRESS_RECHECK_MS);
      }
      h.timer.unref();
    }
  }
}
