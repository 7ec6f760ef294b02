// Per-stage cost of accepting a message (issue 17): the same SMTP front end with one more piece of
// the real hot path switched on per row, each driven by smtp-source (one connection per message,
// no -d) at c=1 and c=10:
//   bare       our SMTP engine (src/smtp/wire/), the body read and thrown away
//   + spool    the body written as chunks through the queue's group-commit writer (no commit)
//   + commit   the message and recipient rows, synchronous=FULL (fsync before 250)
//   + events   the message's history rows (queue/events.ts), as the daemon logs accepted+queued
//   + log      the same two log lines written to stderr (a file here)
// CPU is this process's (all threads: the JS thread and SQLite's pool) per accepted message.
//
//   node dist/test/bench/stages.js [--messages 2000] [--out FILE]   (needs smtp-source)
//
// `stages.js --serve PORT [--fsync]` is the "bare" row as a server of its own for the bench's
// floor rows (run-subjects.ts): our engine storing nothing, with --fsync one 4 KiB write +
// fdatasync per message before the 250 (sink.ts's Syncer), reporting its port over IPC.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SqliteQueueStore } from '../../src/queue/sqlite.js';
import { recordEvents } from '../../src/queue/events.js';
import { log, setLogLevel } from '../../src/log/log.js';
import type { Spool } from '../../src/queue/store.js';
import { SmtpListeners } from '../../src/smtp/wire/listener.js';
import type { SessionHooks } from '../../src/smtp/wire/types.js';
import { freePort } from '../helpers/ports.js';
import { findPostfix, runSmtpSource } from './postfix.js';
import { Syncer } from './sink.js';

const argv = process.argv.slice(2);
const opt = (flag: string, dflt: string): string => {
  const i = argv.indexOf(flag);
  return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1]! : dflt;
};
const MESSAGES = Number(opt('--messages', '2000'));
const OUT = opt('--out', '');
const STAGES = ['bare', '+ spool', '+ commit', '+ events', '+ log'] as const;
type Stage = (typeof STAGES)[number];

async function serve(stage: Stage, store: SqliteQueueStore): Promise<{ port: number; close(): Promise<void> }> {
  const level = STAGES.indexOf(stage);
  // The daemon's own SMTP engine (src/smtp/wire/) with the limits the daemon gives a listener
  // without TLS and users; loopback is trusted in the bench config (greeted at once).
  const listeners = new SmtpListeners({ maxClients: 1000, maxConnectionsPerIp: 1000, isTrusted: () => true });
  const limits = { name: 'bench.test', maxMessageSize: 100 * 1024 * 1024, commandTimeoutMs: 300_000, maxCommandLength: 2048, sessionTimeoutMs: 3_600_000, maxErrors: 20, greetDelayMs: 0 };
  const hooks: SessionHooks = {
    onMailFrom: () => null,
    onRcptTo: () => null,
    async onData(body, session) {
      if (level === 0) {
        for await (const _chunk of body) void _chunk;
        return '2.0.0 Ok';
      }
      const spool: Spool = store.openMessage();
      for await (const chunk of body) await spool.write(chunk);
      if (level === 1) {
        await spool.rollback();
        return '2.0.0 Ok';
      }
      const sender = session.envelope.mailFrom?.address ?? '';
      const recipients = session.envelope.rcptTo.map((r) => r.address);
      await spool.commit({ sender, recipients, via: 'smtp', client: session.remoteAddress });
      if (level >= 3) {
        log.info(spool.msgid, 'accepted', { from: `<${sender}>`, size: spool.size, client: session.remoteAddress });
        for (const r of recipients) log.info(spool.msgid, 'queued', { to: `<${r}>` });
      }
      return `2.0.0 Ok: queued as ${spool.msgid}`;
    },
  };
  const port = await freePort();
  await listeners.listen({ host: '127.0.0.1', port, limits, hooks, tls: null, implicitTls: false });
  return { port, close: () => listeners.close() };
}

/** The bench's engine floor: the bare row's engine, optionally with one fdatasync per message. */
async function serveEngineFloor(port: number, fsync: boolean): Promise<number> {
  const syncer = fsync ? Syncer.open() : null;
  const listeners = new SmtpListeners({ maxClients: 1000, maxConnectionsPerIp: 1000, isTrusted: () => true });
  const limits = { name: 'bench.test', maxMessageSize: 100 * 1024 * 1024, commandTimeoutMs: 300_000, maxCommandLength: 2048, sessionTimeoutMs: 3_600_000, maxErrors: 20, greetDelayMs: 0 };
  const hooks: SessionHooks = {
    onMailFrom: () => null,
    onRcptTo: () => null,
    async onData(body) {
      for await (const _chunk of body) void _chunk;
      if (syncer) await new Promise<void>((resolve) => syncer.sync(resolve));
      return '2.0.0 Ok';
    },
  };
  const p = port || (await freePort());
  await listeners.listen({ host: '127.0.0.1', port: p, limits, hooks, tls: null, implicitTls: false });
  return p;
}

async function main(): Promise<void> {
  const tools = await findPostfix();
  if (!tools.smtpSource) throw new Error('smtp-source is not installed');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tm-stages-'));
  const store = await SqliteQueueStore.open(dir, Date.now);
  // stderr to a file, as under a supervisor that writes the log (stage "+ log" only)
  const logFile = path.join(dir, 'log');
  const logFd = fs.openSync(logFile, 'a');
  const realWrite = process.stderr.write.bind(process.stderr);
  const rows: string[] = [];
  let stopEvents: (() => void) | null = null;
  for (const stage of STAGES) {
    const level = STAGES.indexOf(stage);
    if (level === 3) {
      stopEvents = recordEvents(store.writer);
      setLogLevel('warn'); // the history rows, no lines
    }
    if (level === 4) {
      setLogLevel('info');
      process.stderr.write = ((s: string) => (fs.writeSync(logFd, s), true)) as typeof process.stderr.write;
    }
    const srv = await serve(stage, store);
    const cells: string[] = [];
    for (const c of [1, 10]) {
      await runSmtpSource(tools.smtpSource, srv.port, 1000, 4096, c, 60_000, false); // warm-up (JIT, first pages)
      const cpu0 = process.cpuUsage();
      const r = await runSmtpSource(tools.smtpSource, srv.port, MESSAGES, 4096, c, 180_000, false);
      const cpu = process.cpuUsage(cpu0);
      const us = (cpu.user + cpu.system) / Math.max(1, r.accepted);
      cells.push(`${r.rate.toFixed(0).padStart(6)} msg/s ${us.toFixed(0).padStart(5)} us`);
      if (r.error) cells.push(`(${r.error})`);
    }
    await srv.close();
    process.stderr.write = realWrite;
    rows.push(`  ${stage.padEnd(10)}  ${cells.join('   ')}`);
    realWrite(rows.at(-1)! + '\n');
  }
  stopEvents?.();
  await store.close();
  fs.rmSync(dir, { recursive: true, force: true });
  const text = [
    `per-stage cost, ${new Date().toISOString()}, ${MESSAGES} x 4 KiB, smtp-source without -d (one connection per message)`,
    '  stage                c=1: rate, CPU/msg           c=10: rate, CPU/msg',
    ...rows,
  ].join('\n');
  console.log(text);
  if (OUT) fs.writeFileSync(OUT, text + '\n');
}

if (argv[0] === '--serve') {
  const port = await serveEngineFloor(Number(argv[1] ?? 0), argv.includes('--fsync'));
  if (process.send) process.send({ port });
  else console.log(`engine floor listening on 127.0.0.1:${port}`);
  process.on('disconnect', () => process.exit(0));
  process.on('SIGTERM', () => process.exit(0));
} else {
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
