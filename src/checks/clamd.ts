// `[checks.clamd]`: scans each message with ClamAV's clamd at end of DATA and refuses it when
// clamd finds something. The message is streamed (INSTREAM), so clamd needs no access to our files.
//
//   [checks]
//   data = ["clamd"]
//   [checks.clamd]
//   address = "/run/clamav/clamd.ctl"   # Debian's LocalSocket; or "127.0.0.1:3310"
//   on_error = "tempfail"                # or "accept": take mail unscanned while clamd is down
//   max_size = "25M"                     # bigger messages are not scanned (clamd's StreamMaxLength)
//   timeout = "25s"
//
// Protocol (clamd(8)): `zINSTREAM\0`, then chunks of a 4-byte big-endian length and that many
// bytes, then a zero length; the reply is `stream: OK\0` or `stream: NAME FOUND\0` (or `… ERROR`).

import net from 'node:net';
import type { Check, Phase } from './check.js';
import { NEXT } from './check.js';
import type { CheckEnv } from './registry.js';
import { socketTarget } from './spamd.js';
import { log } from '../log/log.js';

const PHASES: readonly Phase[] = ['data'];

export type OnError = 'tempfail' | 'accept';

export interface ClamdOptions {
  address: string;
  onError: OnError;
  maxSize: number;
  timeoutMs: number;
}

export function createCheck(env: CheckEnv): Check {
  const o = env.options;
  const address = o.string('address', '/run/clamav/clamd.ctl');
  try {
    socketTarget(address, 'clamd');
  } catch (err) {
    o.fail('address', (err as Error).message, 'write host:port (e.g. "127.0.0.1:3310") or an absolute socket path (clamd.conf LocalSocket)');
  }
  const onError = o.oneOf<OnError>('on_error', ['tempfail', 'accept'], 'tempfail');
  const maxSize = o.size('max_size', 25 * 1024 * 1024);
  const timeoutMs = o.duration('timeout', Math.max(1000, env.config.checks.timeoutMs - 5_000));
  if (timeoutMs <= 0) o.fail('timeout', 'must be longer than 0', 'write e.g. timeout = "25s"');
  o.rejectUnknown();
  return clamdCheck({ address, onError, maxSize, timeoutMs });
}

export function clamdCheck(opts: ClamdOptions): Check {
  return {
    name: 'clamd',
    phases: PHASES,
    async run(_phase, ctx) {
      if (!ctx.body) throw new Error('the session gave the clamd check no message body at DATA');
      if (ctx.size !== undefined && ctx.size > opts.maxSize) {
        log.info(ctx.queueId ?? null, 'clamd: message not scanned, bigger than max_size', { check: 'clamd', size: ctx.size, max_size: opts.maxSize });
        return NEXT;
      }
      let found: string | null;
      try {
        found = await clamdScan(opts.address, ctx.body(), opts.timeoutMs, opts.maxSize);
      } catch (err) {
        if (err instanceof TooBig) {
          log.info(ctx.queueId ?? null, 'clamd: message not scanned, bigger than max_size', { check: 'clamd', max_size: opts.maxSize });
          return NEXT;
        }
        if (opts.onError === 'tempfail') throw err;
        log.warn(ctx.queueId ?? null, 'clamd failed; message accepted unscanned (on_error = "accept")', { check: 'clamd', error: (err as Error).message });
        return NEXT;
      }
      if (found === null) return NEXT;
      log.info(ctx.queueId ?? null, 'clamd found a virus', { check: 'clamd', virus: found, client: ctx.clientAddress });
      return { action: 'reject', code: 554, enhanced: '5.7.1', text: `Message contains a virus (${found})` };
    },
  };
}

/** The stream outgrew max_size while being sent (SIZE= was absent or lied). */
class TooBig extends Error {}

const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
};

/**
 * Streams one message to clamd.
 * @returns the signature name when clamd found something, null when clean.
 * @throws Error when clamd cannot be reached, times out or answers with an error
 * (e.g. "INSTREAM size limit exceeded"); TooBig past `maxSize` bytes.
 */
export function clamdScan(address: string, message: NodeJS.ReadableStream, timeoutMs: number, maxSize = Infinity): Promise<string | null> {
  return new Promise<string | null>((resolve, reject) => {
    const sock = net.connect(socketTarget(address, 'clamd'));
    let reply = '';
    let settled = false;
    let wakeWriter: (() => void) | null = null;
    const done = (err: Error | null, found?: string | null) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      wakeWriter?.();
      if (err) reject(err);
      else resolve(found ?? null);
    };
    const timer = setTimeout(() => done(new Error(`clamd ${address}: no answer within ${timeoutMs} ms`)), timeoutMs);
    sock.setEncoding('utf8');
    let writeRefused: Error | null = null;
    sock.on('error', (err: NodeJS.ErrnoException) => {
      // clamd answers an over-long stream ("INSTREAM size limit exceeded") and hangs up while we
      // are still writing: our write fails, but its answer may already be here — read it first.
      if (sock.readyState !== 'opening' && (err.code === 'EPIPE' || err.code === 'ECONNRESET')) {
        writeRefused = err;
        return;
      }
      done(new Error(`clamd ${address}: ${err.message}`));
    });
    sock.on('close', () => {
      if (settled) return;
      if (reply) onReply();
      else done(new Error(`clamd ${address}: ${writeRefused?.message ?? 'closed the connection without an answer'}`));
    });
    sock.on('drain', () => wakeWriter?.());
    const onReply = () => {
      const line = reply.replace(/\0[\s\S]*$/, '').trim();
      const m = /^stream: (?:(OK)|(.+) FOUND)$/.exec(line);
      if (m) done(null, m[1] ? null : m[2]!);
      else done(new Error(`clamd ${address}: ${line || 'closed the connection without an answer'}`));
    };
    sock.on('data', (d: string) => {
      reply += d;
      if (reply.includes('\0')) onReply();
    });
    sock.on('end', onReply);
    sock.once('connect', () => {
      void (async () => {
        sock.write('zINSTREAM\0');
        let sent = 0;
        for await (const chunk of message as AsyncIterable<Buffer | string>) {
          if (settled) break; // clamd answered early (an error) or we gave up: stop reading
          const buf = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
          sent += buf.length;
          if (sent > maxSize) return done(new TooBig(`more than ${maxSize} bytes`));
          if (!buf.length) continue; // a zero length would end the stream early
          if (!sock.write(Buffer.concat([u32(buf.length), buf]))) {
            await new Promise<void>((r) => (wakeWriter = r));
            wakeWriter = null;
          }
        }
        if (!settled) sock.write(u32(0));
      })().catch((err: Error) => done(new Error(`reading the message for clamd: ${err.message}`)));
    });
  });
}
