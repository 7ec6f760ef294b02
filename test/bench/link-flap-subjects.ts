// Link-flap benchmark (link-flap.ts): the two subjects — the tidemail daemon and, when installed,
// a private Postfix — each relaying to its own far-side smarthost, and the messages injected into
// them.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { makeSite, runCli, startDaemon, type RunningDaemon } from '../helpers/daemon.js';
import type { VethNamespace } from '../helpers/netns.js';
import { sendMessage } from '../helpers/smtp-client.js';
import { freePort, waitForSmtp } from './common.js';
import { startFarSide, type FarSide } from './link-flap-far-side.js';
import { abortPostfixSync, findPostfix, startPostfix, type PostfixInstance } from './postfix.js';

export interface Msg {
  tag: string;
  injectedAt: number;
  acceptedAt?: number;
  reply?: string;
}

export interface Subject {
  name: string;
  label: string;
  /** SMTP port on 127.0.0.1 we inject into */
  port: number;
  far: FarSide;
  msgs: Map<string, Msg>;
  inflight: Set<Promise<void>>;
  attemptsWhileDown: number;
  /** messages still queued at the end, if the subject can tell */
  queued(): Promise<number | null>;
  stop(): Promise<void>;
}

export function inject(s: Subject, n: number, clock: () => number): void {
  const tag = `${s.name}-${String(n).padStart(5, '0')}`;
  const m: Msg = { tag, injectedAt: clock() };
  s.msgs.set(tag, m);
  const body = `From: bench@tidemail.test\r\nTo: you@far.example\r\nSubject: link flap ${tag}\r\n` +
    `Message-ID: <${tag}.${process.pid}@bench.test>\r\nX-Tag: ${tag}\r\n\r\nlink-flap benchmark\r\n`;
  const p = sendMessage(s.port, 'bench@tidemail.test', ['you@far.example'], body).then(
    (r) => {
      m.reply = r;
      if (r.startsWith('250')) m.acceptedAt = clock();
    },
    (e: unknown) => void (m.reply = `error: ${(e as Error).message.split('\n')[0]}`),
  );
  s.inflight.add(p);
  void p.finally(() => s.inflight.delete(p));
}

/** Accepted messages that have not arrived yet. */
export function waiting(s: Subject): number {
  let n = 0;
  for (const m of s.msgs.values()) if (m.acceptedAt !== undefined && !s.far.arrivals.has(m.tag)) n++;
  return n;
}

/** Cleanup steps of the run, undone last first whatever way it ends. */
export type Undo = Array<() => void>;

/** The daemon, routing to its far side (port 2525) over the link; everything else at its defaults. */
export async function startTidemailSubject(v: VethNamespace, clock: () => number, undo: Undo): Promise<{ subject: Subject; daemon: RunningDaemon }> {
  const farT = await startFarSide(v, 2525, clock);
  undo.push(() => farT.stop());
  const site = await makeSite();
  // BENCH_FLAP_ROUTE adds route lines for experiments (e.g. "max_connections = 5"); the
  // figures in RESULTS.md are with the defaults.
  site.route('far', `smarthost = "${v.farIp}:2525"\ntls = "none"\nonline.interface = "${v.hostIf}"\n${process.env.BENCH_FLAP_ROUTE ?? ''}\n`);
  const daemon: RunningDaemon = await startDaemon(site);
  undo.push(() => void daemon.proc.kill('SIGKILL'));
  const subject: Subject = {
    name: 'tidemail',
    label: 'tidemail',
    port: site.port,
    far: farT,
    msgs: new Map(),
    inflight: new Set(),
    attemptsWhileDown: 0,
    // `tidemail status` prints "N queued" per route
    queued: async () => {
      const r = await runCli(['status', '--config', site.configPath]);
      const m = /(\d+) queued/.exec(r.stdout);
      return m ? Number(m[1]) : null;
    },
    stop: async () => void (await daemon.stop()),
  };
  return { subject, daemon };
}

/**
 * A private Postfix relaying to its far side (port 2526) with short back-off, or null — with a
 * note saying why — when it is not installed or does not start.
 */
export async function startPostfixSubject(v: VethNamespace, clock: () => number, undo: Undo, notes: string[]): Promise<Subject | null> {
  const { postfix: tools } = await findPostfix();
  if (!tools) {
    notes.push('Postfix is not installed: no Postfix column.');
    return null;
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tidemail-bench-flap-postfix-'));
  fs.chmodSync(dir, 0o755); // the postfix user must reach DIR/queue
  undo.push(() => fs.rmSync(dir, { recursive: true, force: true }));
  undo.push(() => abortPostfixSync(tools, dir));
  try {
    const farP = await startFarSide(v, 2526, clock);
    undo.push(() => farP.stop());
    const port = await freePort();
    const pf: PostfixInstance = await startPostfix(tools, dir, port, {
      relay: { host: v.farIp, port: 2526, minimalBackoff: '10s', maximalBackoff: '60s', queueRunDelay: '10s' },
    });
    if (!(await waitForSmtp('127.0.0.1', port, 30_000))) throw new Error(`smtpd on 127.0.0.1:${port} did not answer`);
    return {
      name: 'postfix',
      label: `Postfix ${tools.version}`,
      port,
      far: farP,
      msgs: new Map(),
      inflight: new Set(),
      attemptsWhileDown: 0,
      queued: async () => pf.queuedCount(),
      stop: () => pf.stop(),
    };
  } catch (e) {
    notes.push(`Postfix column skipped: ${(e as Error).message.split('\n')[0]}`);
    return null;
  }
}
