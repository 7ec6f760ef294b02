// `[checks.spamd]`: scores each message with SpamAssassin's spamd (the spamc protocol, over TCP
// or a unix socket) at end of DATA. Above `reject_score` the message is refused; below it the
// score goes into X-Spam-Status / X-Spam-Score headers for the user's filters.
//
//   [checks]
//   data = ["spamd"]
//   [checks.spamd]
//   address = "127.0.0.1:783"      # or "/run/spamd.sock"
//   reject_score = 10              # SpamAssassin's own "spam" mark is 5
//   add_headers = true
//   max_size = "500K"              # bigger messages are not scanned (spamc's default)
//   tempfail_on_error = true       # false: accept unscanned when spamd is down
//   timeout = "25s"
//
// Protocol (spamd/PROTOCOL): `SYMBOLS SPAMC/1.5`, `Content-length: N`, an empty line, the
// message; the reply is `SPAMD/1.1 0 EX_OK`, `Spam: True ; 12.3 / 5.0`, an empty line and the
// names of the rules that hit.

import net from 'node:net';
import type { Check, HeaderField, Phase } from './check.js';
import { NEXT } from './check.js';
import type { CheckEnv } from './registry.js';
import { log } from '../log/log.js';

const PHASES: readonly Phase[] = ['data'];

export interface SpamdOptions {
  /** `host:port`, `[v6]:port` or a unix socket path. */
  address: string;
  rejectScore: number;
  addHeaders: boolean;
  maxSize: number;
  tempfailOnError: boolean;
  timeoutMs: number;
}

/** What spamd said about one message. */
export interface SpamdReport {
  isSpam: boolean;
  score: number;
  /** spamd's own threshold (required_score). */
  required: number;
  /** Names of the rules that hit. */
  symbols: string[];
}

export function socketTarget(address: string, what: string): net.NetConnectOpts {
  if (address.startsWith('/')) return { path: address };
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(address) ?? /^([^:[\]]+):(\d+)$/.exec(address);
  if (!m || Number(m[2]) > 65535) throw new Error(`${what} address "${address}" is neither host:port nor a socket path`);
  return { host: m[1]!, port: Number(m[2]) };
}

export function createCheck(env: CheckEnv): Check {
  const o = env.options;
  const address = o.string('address', '127.0.0.1:783');
  try {
    socketTarget(address, 'spamd');
  } catch (err) {
    o.fail('address', (err as Error).message, 'write host:port (e.g. "127.0.0.1:783") or an absolute socket path');
  }
  // A score is a decimal ("7.5"), which ConfigReader has no reader for.
  const rawScore = o.table.reject_score;
  if (rawScore !== undefined && (typeof rawScore !== 'number' || !Number.isFinite(rawScore))) {
    o.fail('reject_score', `must be a number, got ${JSON.stringify(rawScore)}`, 'write e.g. reject_score = 10 (no quotes)');
  }
  const rejectScore = (rawScore as number | undefined) ?? 10;
  const addHeaders = o.bool('add_headers', true);
  const maxSize = o.size('max_size', 500 * 1024);
  const tempfailOnError = o.bool('tempfail_on_error', true);
  const timeoutMs = o.duration('timeout', Math.max(1000, env.config.checks.timeoutMs - 5_000));
  if (timeoutMs <= 0) o.fail('timeout', 'must be longer than 0', 'write e.g. timeout = "25s"');
  o.rejectUnknown(['reject_score']);
  return spamdCheck({ address, rejectScore, addHeaders, maxSize, tempfailOnError, timeoutMs });
}

export function spamdCheck(opts: SpamdOptions): Check {
  return {
    name: 'spamd',
    phases: PHASES,
    async run(_phase, ctx) {
      if (!ctx.body) throw new Error('the session gave the spamd check no message body at DATA');
      // Content-length must be exact (spamd refuses a mismatch): count the stream we will send,
      // which is also how a message over max_size is found without trusting SIZE=.
      const length = ctx.size !== undefined && ctx.size > opts.maxSize ? ctx.size : await streamLength(ctx.body, opts.maxSize);
      if (length > opts.maxSize) {
        log.info(ctx.queueId ?? null, 'spamd: message not scanned, bigger than max_size', { check: 'spamd', size: length, max_size: opts.maxSize });
        return NEXT;
      }
      let report: SpamdReport;
      try {
        report = await askSpamd(opts.address, ctx.body(), length, opts.timeoutMs);
      } catch (err) {
        if (opts.tempfailOnError) throw err;
        log.warn(ctx.queueId ?? null, 'spamd failed; message accepted unscanned (tempfail_on_error = false)', { check: 'spamd', error: (err as Error).message });
        return NEXT;
      }
      log.info(ctx.queueId ?? null, 'spamd scored the message', { check: 'spamd', score: report.score, required: report.required, tests: report.symbols.join(',') || undefined });
      if (report.score >= opts.rejectScore) {
        return { action: 'reject', code: 550, enhanced: '5.7.1', text: `Message rejected as spam (score ${report.score})` };
      }
      return opts.addHeaders ? { action: 'next', addHeaders: spamHeaders(report) } : NEXT;
    },
  };
}

/** X-Spam-Status the way SpamAssassin writes it (kept on one line, under the 998-octet limit). */
export function spamHeaders(r: SpamdReport): HeaderField[] {
  let tests = r.symbols.join(',');
  if (tests.length > 800) tests = tests.slice(0, tests.lastIndexOf(',', 800)) + ',...';
  return [
    { name: 'X-Spam-Status', value: `${r.isSpam ? 'Yes' : 'No'}, score=${r.score.toFixed(1)} required=${r.required.toFixed(1)} tests=${tests || 'none'}` },
    { name: 'X-Spam-Score', value: r.score.toFixed(1) },
  ];
}

/** Bytes in a fresh stream of the message, reading no further than `limit` + 1. */
async function streamLength(body: () => NodeJS.ReadableStream, limit: number): Promise<number> {
  let n = 0;
  for await (const chunk of body() as AsyncIterable<Buffer | string>) {
    n += typeof chunk === 'string' ? Buffer.byteLength(chunk) : chunk.length;
    if (n > limit) break; // leaving the loop destroys the stream
  }
  return n;
}

/**
 * Sends one message with SYMBOLS and reads the verdict.
 * @throws Error when spamd cannot be reached, times out, or answers with an error code.
 */
export function askSpamd(address: string, message: NodeJS.ReadableStream, length: number, timeoutMs: number): Promise<SpamdReport> {
  return new Promise<SpamdReport>((resolve, reject) => {
    const sock = net.connect(socketTarget(address, 'spamd'));
    const chunks: Buffer[] = [];
    let settled = false;
    const done = (err: Error | null, r?: SpamdReport) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      (message as NodeJS.ReadableStream & { destroy?: () => void }).destroy?.();
      if (err) reject(err);
      else resolve(r!);
    };
    const timer = setTimeout(() => done(new Error(`spamd ${address}: no answer within ${timeoutMs} ms`)), timeoutMs);
    sock.on('error', (err) => done(new Error(`spamd ${address}: ${err.message}`)));
    sock.on('data', (d: Buffer) => chunks.push(d));
    sock.on('end', () => {
      try {
        done(null, parseSpamdReply(Buffer.concat(chunks).toString('utf8')));
      } catch (err) {
        done(new Error(`spamd ${address}: ${(err as Error).message}`));
      }
    });
    sock.once('connect', () => {
      sock.write(`SYMBOLS SPAMC/1.5\r\nContent-length: ${length}\r\n\r\n`);
      // pipe() honours back-pressure; end() half-closes, which is how spamc ends a request too.
      message.on('error', (err: Error) => done(new Error(`reading the message for spamd: ${err.message}`)));
      message.pipe(sock);
    });
  });
}

/** Parses a SYMBOLS/CHECK reply. @throws Error for an error code or a reply without `Spam:`. */
export function parseSpamdReply(text: string): SpamdReport {
  const headEnd = text.indexOf('\r\n\r\n');
  const head = headEnd >= 0 ? text.slice(0, headEnd) : text.trimEnd();
  const body = headEnd >= 0 ? text.slice(headEnd + 4) : '';
  const [status = '', ...lines] = head.split('\r\n');
  const m = /^SPAMD\/[\d.]+ (\d+) (.*)$/.exec(status);
  if (!m) throw new Error(`not a spamd reply: ${JSON.stringify(text.slice(0, 100))}`);
  if (m[1] !== '0') throw new Error(`spamd error ${m[1]} ${m[2]}`);
  const spam = lines.map((l) => /^Spam:\s*(True|False|Yes|No)\s*;\s*(-?[\d.]+)\s*\/\s*(-?[\d.]+)/i.exec(l)).find(Boolean);
  if (!spam) throw new Error(`spamd reply without a Spam: line: ${JSON.stringify(head.slice(0, 200))}`);
  return {
    isSpam: /^(true|yes)$/i.test(spam[1]!),
    score: Number(spam[2]),
    required: Number(spam[3]),
    symbols: body.trim().split(',').map((s) => s.trim()).filter(Boolean),
  };
}
