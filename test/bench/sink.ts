// The floor: a raw SMTP sink that speaks just enough ESMTP (with PIPELINING) to take mail, and
// stores nothing. It answers 250 as soon as it sees the "\r\n.\r\n" that ends DATA, so its rate
// is what the client, the loopback TCP stack and one Node event loop can do at best.
//
// startSinkProcess() runs it in a separate node process (this same file, forked) so it does not
// share an event loop with the load generator; startSink() is the in-process server itself.
// With `fsync`, each message also costs one 4 KiB write + fdatasync (libuv's pool, as the daemon's
// SQLite commit runs) before its 250: the least a durable server pays per message without group
// commit, so floor vs floor+fsync shows what the disk's latency alone takes.

import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { once } from 'node:events';

const EHLO_REPLY =
  '250-sink.bench.test\r\n' +
  '250-PIPELINING\r\n' +
  '250-SIZE 209715200\r\n' +
  '250-8BITMIME\r\n' +
  '250 ENHANCEDSTATUSCODES\r\n';

const TERMINATOR = Buffer.from('\r\n.\r\n', 'latin1');
const RECORD = Buffer.alloc(4096, 120);
/** The fsync file is rewritten in place over this many 4 KiB slots, as a WAL is reused. */
const SLOTS = 1024;

/** One write + fdatasync per message on a shared file (the fsync floor). */
export class Syncer {
  private next = 0;
  constructor(private readonly fd: number) {}
  static open(): Syncer {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tidemail-bench-sink-'));
    const fd = fs.openSync(path.join(dir, 'fsync'), 'w');
    process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
    return new Syncer(fd);
  }
  sync(done: () => void): void {
    const pos = (this.next++ % SLOTS) * RECORD.length;
    fs.write(this.fd, RECORD, 0, RECORD.length, pos, () => fs.fdatasync(this.fd, () => done()));
  }
}

/** Per-connection protocol state. */
class SinkSession {
  /** command bytes not yet terminated by CRLF */
  private cmdBuf = '';
  /** true while receiving message content after a 354 */
  private inData = false;
  /** the last (up to 4) content bytes seen, to find a terminator split across chunks */
  private tail: Buffer = Buffer.alloc(0);
  private queued = 0;
  /** Input that came while a message's fsync was under way (fsync mode), processed after it. */
  private held: Buffer[] | null = null;

  constructor(private readonly sock: net.Socket, private readonly syncer: Syncer | null = null) {
    sock.setNoDelay(true);
    sock.write('220 sink.bench.test ESMTP bench sink\r\n');
    sock.on('data', (chunk: Buffer) => this.onData(chunk));
    sock.on('error', () => sock.destroy());
  }

  private onData(chunk: Buffer): void {
    if (this.held) {
      this.held.push(chunk);
      return;
    }
    let out = ''; // replies produced by this chunk, written in one go (pipelining-friendly)
    let rest: Buffer | null = chunk;
    while (rest && rest.length > 0) {
      if (this.inData) {
        const end = this.findTerminator(rest);
        if (end < 0) {
          // Whole chunk is content: remember only its last 4 bytes, discard the rest.
          const seen = rest.length >= 4 ? rest : Buffer.concat([this.tail, rest]);
          this.tail = Buffer.from(seen.subarray(Math.max(0, seen.length - 4)));
          rest = null;
        } else {
          this.inData = false;
          rest = rest.subarray(end);
          if (this.syncer) {
            // Durable: the 250 (and anything after it) waits for this message's fdatasync.
            if (out) this.sock.write(out);
            this.held = rest.length ? [Buffer.from(rest)] : [];
            this.syncer.sync(() => this.synced());
            return;
          }
          out += `250 2.0.0 Ok: queued as S${++this.queued}\r\n`;
        }
      } else {
        this.cmdBuf += rest.toString('latin1');
        rest = null;
        let eol: number;
        while ((eol = this.cmdBuf.indexOf('\r\n')) >= 0) {
          const line = this.cmdBuf.slice(0, eol);
          this.cmdBuf = this.cmdBuf.slice(eol + 2);
          const verb = line.slice(0, 4).toUpperCase();
          if (verb === 'DATA') {
            out += '354 End data with <CR><LF>.<CR><LF>\r\n';
            this.inData = true;
            // The CRLF that ended "DATA" counts as the start of the first content line, so an
            // empty message ".\r\n" right away is recognised.
            this.tail = Buffer.from('\r\n', 'latin1');
            // Anything left in cmdBuf is already message content.
            if (this.cmdBuf.length > 0) {
              rest = Buffer.from(this.cmdBuf, 'latin1');
              this.cmdBuf = '';
            }
            break;
          }
          out += this.command(verb);
          if (verb === 'QUIT') {
            this.sock.end(out);
            return;
          }
        }
        if (this.cmdBuf.length > 65536) {
          this.sock.end('500 5.5.2 line too long\r\n');
          return;
        }
      }
    }
    if (out) this.sock.write(out);
  }

  private synced(): void {
    if (this.sock.destroyed) return;
    const held = this.held!;
    this.held = null;
    this.sock.write(`250 2.0.0 Ok: queued as S${++this.queued}\r\n`);
    if (held.length) this.onData(Buffer.concat(held));
  }

  /**
   * Offset just past "\r\n.\r\n" in `chunk` (counting bytes carried in `tail`), or -1.
   * Checks the seam between the previous chunk and this one first, then the chunk itself.
   */
  private findTerminator(chunk: Buffer): number {
    if (this.tail.length > 0) {
      const seam = Buffer.concat([this.tail, chunk.subarray(0, 4)]);
      const i = seam.indexOf(TERMINATOR);
      if (i >= 0) return i + TERMINATOR.length - this.tail.length;
    }
    const j = chunk.indexOf(TERMINATOR);
    return j >= 0 ? j + TERMINATOR.length : -1;
  }

  private command(verb: string): string {
    switch (verb) {
      case 'EHLO':
        return EHLO_REPLY;
      case 'HELO':
        return '250 sink.bench.test\r\n';
      case 'MAIL':
        return '250 2.1.0 Ok\r\n';
      case 'RCPT':
        return '250 2.1.5 Ok\r\n';
      case 'RSET':
      case 'NOOP':
        return '250 2.0.0 Ok\r\n';
      case 'QUIT':
        return '221 2.0.0 Bye\r\n';
      default:
        return '502 5.5.2 Command not implemented\r\n';
    }
  }
}

/** Start the sink in this process. Resolves with the listening server. */
export async function startSink(port = 0, host = '127.0.0.1', fsync = false): Promise<net.Server> {
  const syncer = fsync ? Syncer.open() : null;
  const server = net.createServer((sock) => new SinkSession(sock, syncer));
  server.listen({ port, host, backlog: 1024 });
  await once(server, 'listening');
  return server;
}

export interface SinkProcess {
  port: number;
  pid: number;
  stop(): Promise<void>;
}

/**
 * Fork a script as a separate node process serving SMTP (this file's sink by default, with
 * `--fsync` the durable variant; stages.ts --serve for our engine); resolves once it listens.
 */
export async function startSinkProcess(port = 0, opts: { fsync?: boolean; script?: string; args?: string[] } = {}): Promise<SinkProcess> {
  const script = opts.script ?? fileURLToPath(import.meta.url);
  const args = opts.args ?? ['--serve', String(port), ...(opts.fsync ? ['--fsync'] : [])];
  const child: ChildProcess = fork(script, args, {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const msg = await new Promise<{ port: number }>((resolve, reject) => {
    child.once('message', (m) => resolve(m as { port: number }));
    child.once('exit', (code) => reject(new Error(`sink exited early (code ${code})`)));
    child.once('error', reject);
  });
  return {
    port: msg.port,
    pid: child.pid ?? 0,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      await exited;
    },
  };
}

// Entry point when forked: `node sink.js --serve PORT` listens and reports its port over IPC.
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href && process.argv[2] === '--serve') {
  const server = await startSink(Number(process.argv[3] ?? 0), '127.0.0.1', process.argv.includes('--fsync'));
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  if (process.send) process.send({ port });
  else console.log(`sink listening on 127.0.0.1:${port}`);
  // Leave when the parent goes away or asks us to.
  process.on('disconnect', () => process.exit(0));
  process.on('SIGTERM', () => process.exit(0));
}
