// A small POP3 client session: RFC 1939 (USER/PASS, APOP, STAT, LIST, UIDL, RETR, DELE, QUIT),
// RFC 2449 (CAPA), RFC 2595 (STLS) and RFC 5034 (AUTH PLAIN with an initial response). Used for SMTP-after-POP logins and by the fetcher.
// This file owns the connection (TLS, reading lines, deadlines, caps); what the replies mean
// (status lines, listings, the error classes) is in pop3-reply.ts.
//
// Lines are read as bytes (messages may be 8-bit); multi-line responses are dot-unstuffed and
// handed out line by line, so a large RETR can be streamed instead of held in memory.
// Certificates are verified unless the caller says otherwise.
//
// A server is a peer we do not control: every reply is bounded. Each command has an overall
// deadline (not only the idle timeout, which a drip-feed of one byte every few seconds never
// trips): `timeoutMs` for a one-line reply, plus the time its byte cap takes at `minBytesPerSecond`
// for a multi-line one. Multi-line replies have a byte cap (the caller's for RETR/TOP, from the
// LIST size; fixed ones for CAPA, LIST and UIDL); past it the connection is cut at once, not
// read on. Text from the server that reaches an error message is stripped of control characters
// (printable(), pop3-reply.ts).

import { createHash } from 'node:crypto';
import net from 'node:net';
import tls from 'node:tls';
import { redactAuthReply } from '../log/auth-echo.js';
import { connectError, listSize, parseListing, parseStat, Pop3Error, Pop3LimitError, printable, statusText, uidlId } from './pop3-reply.js';

export { Pop3Error, Pop3LimitError, Pop3TlsError, printable } from './pop3-reply.js';

export type Pop3TlsMode = 'implicit' | 'starttls' | 'none';
/** auto: see Pop3Client.login; user: USER/PASS; apop: APOP only; plain: SASL PLAIN (RFC 5034) only. */
export type Pop3AuthMethod = 'auto' | 'user' | 'apop' | 'plain';

export interface Pop3Options {
  host: string;
  port: number;
  /** implicit: TLS from the start (995); starttls: STLS after the greeting; none: plain text. */
  tls: Pop3TlsMode;
  /** Name the certificate must carry; defaults to host. */
  servername?: string;
  /** Extra trusted CA (PEM), e.g. for a private server. */
  ca?: string | Buffer;
  /** Defaults to true. */
  rejectUnauthorized?: boolean;
  /** Longest wait for any one reply. */
  timeoutMs?: number;
  /** The slowest transfer a multi-line reply may take before its deadline (default 1 KiB/s). */
  minBytesPerSecond?: number;
  signal?: AbortSignal;
}

/** One line of a multi-line response, dot-unstuffed, without its line ending. */
export type LineHandler = (line: Buffer) => void | Promise<void>;

/** Longest line of a message (RETR, TOP): RFC 5322 says 998, real mail is sloppier. */
const MAX_LINE = 1024 * 1024;
/** Longest status line or listing line; RFC 1939 3 allows 512 octets, we allow some slack. */
const MAX_REPLY_LINE = 4096;
/** Caps for replies whose size the server does not announce. */
const MAX_CAPA = 64 * 1024;
const MAX_LISTING = 16 * 1024 * 1024;
const DEFAULT_MIN_RATE = 1024;
/** Stop reading from the socket while this much is waiting for the caller. */
const HIGH_WATER = 256 * 1024;
const DEFAULT_TIMEOUT_MS = 30_000;

export class Pop3Client {
  /** The greeting's text after "+OK". */
  greeting = '';
  /** RFC 1939 7: the <…@…> stamp an APOP digest is made from, when the greeting has one. */
  apopTimestamp: string | undefined;
  /** True once the session runs over TLS. */
  secure = false;

  private sock: net.Socket;
  /** Received, not yet read: the socket's own chunks (copied together only when tiny, see readLine). */
  private chunks: Buffer[] = [];
  private buffered = 0;
  /** Leading chunks already searched for a line end (a drip was searched anew per byte: 128 s CPU per 100 kB). */
  private scanned = 0;
  private scannedBytes = 0;
  /** Bytes taken out of `chunks` so far: what a reply's byte cap is counted in. */
  private consumed = 0;
  private failure: Error | null = null;
  private waiters: (() => void)[] = [];
  private queue: Promise<void> = Promise.resolve();
  private readonly o: Pop3Options;
  private readonly label: string;
  private readonly onData = (d: Buffer) => {
    this.chunks.push(d);
    this.buffered += d.length;
    if (this.buffered > HIGH_WATER) this.sock.pause();
    this.notify();
  };
  private readonly onError = (err: Error) => this.fail(err);
  private readonly onClose = () => this.fail(new Pop3Error(`${this.label} closed the connection`));
  private readonly onAbort = () => this.sock.destroy(new Pop3Error(`POP3 session with ${this.label} aborted`));

  private constructor(sock: net.Socket, o: Pop3Options) {
    this.sock = sock;
    this.o = o;
    this.label = `${o.host}:${o.port}`;
    this.attach(sock);
    o.signal?.addEventListener('abort', this.onAbort, { once: true });
  }

  /**
   * Connects, reads the greeting and, for tls = "starttls", switches to TLS.
   * @throws Pop3Error when the server cannot be reached, TLS fails, or it greets with -ERR.
   */
  static async connect(o: Pop3Options): Promise<Pop3Client> {
    const label = `${o.host}:${o.port}`;
    const sock =
      o.tls === 'implicit'
        ? tls.connect({ host: o.host, port: o.port, ...tlsOptions(o) })
        : net.connect({ host: o.host, port: o.port });
    sock.setTimeout(o.timeoutMs ?? DEFAULT_TIMEOUT_MS, () => sock.destroy(new Pop3Error(`no answer from ${label} within ${(o.timeoutMs ?? DEFAULT_TIMEOUT_MS) / 1000} s`)));
    try {
      await new Promise<void>((resolve, reject) => {
        sock.once(o.tls === 'implicit' ? 'secureConnect' : 'connect', () => {
          sock.off('error', reject);
          resolve();
        });
        sock.once('error', reject);
      });
    } catch (err) {
      sock.destroy();
      throw connectError(label, err as NodeJS.ErrnoException);
    }
    const c = new Pop3Client(sock, o);
    c.secure = o.tls === 'implicit';
    try {
      c.greeting = await c.serial('the greeting', c.timeoutMs(), () => c.readStatus('greeting'));
      c.apopTimestamp = /<[^<>\s]+@[^<>\s]+>/.exec(c.greeting)?.[0];
      if (o.tls === 'starttls') await c.stls();
    } catch (err) {
      c.close();
      throw err;
    }
    return c;
  }

  /** RFC 2449: the capability lines ("UIDL", "SASL PLAIN", …); empty when the server has no CAPA. */
  async capa(): Promise<string[]> {
    try {
      const { lines } = await this.multiline('CAPA', undefined, { maxBytes: MAX_CAPA, lineMax: MAX_REPLY_LINE });
      return lines.map((l) => l.toString('utf8').trim()).filter(Boolean);
    } catch (err) {
      if (err instanceof Pop3Error && err.response !== undefined) return [];
      throw err;
    }
  }

  /**
   * RFC 2595 4: STLS, then TLS over the same connection with the certificate verified.
   * @throws Pop3Error when the server refuses STLS or the handshake fails.
   */
  async stls(): Promise<void> {
    if (this.secure) throw new Pop3Error(`STLS on ${this.label}: the session already runs over TLS`);
    await this.command('STLS');
    // Anything sent after the +OK but before the handshake was injected by a third party.
    if (this.buffered) throw new Pop3Error(`${this.label} sent data after +OK to STLS; refusing to continue (possible injection)`);
    const plain = this.sock;
    this.detach(plain);
    plain.setTimeout(0); // the TLS socket below keeps its own idle timer
    const secured = tls.connect({ socket: plain, host: this.o.host, ...tlsOptions(this.o) });
    try {
      await new Promise<void>((resolve, reject) => {
        secured.once('secureConnect', () => {
          secured.off('error', reject);
          resolve();
        });
        secured.once('error', reject);
      });
    } catch (err) {
      secured.destroy();
      this.sock = secured;
      this.failure = connectError(this.label, err as NodeJS.ErrnoException);
      throw this.failure;
    }
    secured.setTimeout(this.o.timeoutMs ?? DEFAULT_TIMEOUT_MS, () => secured.destroy(new Pop3Error(`no answer from ${this.label} within ${(this.o.timeoutMs ?? DEFAULT_TIMEOUT_MS) / 1000} s`)));
    this.sock = secured;
    this.attach(secured);
    this.secure = true;
  }

  /**
   * Logs in; returns the method used. "auto" picks, in order:
   *  - over TLS: SASL PLAIN when CAPA lists it, else APOP when the greeting offers it, else USER/PASS;
   *  - in plain text: APOP first (the password never crosses the wire), then SASL PLAIN, then USER/PASS.
   * A refused APOP falls back to the next method: some servers stamp every greeting but keep only
   * hashed passwords. (Refusing the fallback would not stop anyone who can alter the session:
   * they can strip the stamp.)
   * @throws Pop3Error with the server's -ERR text.
   */
  async login(user: string, password: string, method: Pop3AuthMethod = 'auto'): Promise<'user' | 'apop' | 'plain'> {
    try {
      return await this.loginWith(user, password, method);
    } catch (err) {
      // The -ERR becomes the account's error in `tidemail status` and the log: not an echo of the password.
      if (!(err instanceof Pop3Error) || err.response === undefined) throw err;
      const sent = [password, Buffer.from(`\0${user}\0${password}`, 'utf8').toString('base64')];
      const response = redactAuthReply(err.response, sent);
      throw new Pop3Error(err.message.split(err.response).join(response), response);
    }
  }

  private async loginWith(user: string, password: string, method: Pop3AuthMethod): Promise<'user' | 'apop' | 'plain'> {
    if (method === 'user') return this.userPass(user, password);
    if (method === 'apop') return (await this.apop(user, password), 'apop');
    if (method === 'plain') return (await this.authPlain(user, password), 'plain');
    const sasl = await this.saslMechanisms();
    if (this.secure && sasl.includes('PLAIN')) return (await this.authPlain(user, password), 'plain');
    if (this.apopTimestamp) {
      try {
        await this.apop(user, password);
        return 'apop';
      } catch (err) {
        if (!(err instanceof Pop3Error) || err.response === undefined) throw err;
      }
    }
    if (sasl.includes('PLAIN')) return (await this.authPlain(user, password), 'plain');
    return this.userPass(user, password);
  }

  /** RFC 2449 6.9: the mechanisms on the CAPA line "SASL …", upper-cased; none without CAPA. */
  async saslMechanisms(): Promise<string[]> {
    const line = (await this.capa()).find((c) => /^SASL(\s|$)/i.test(c));
    return line ? line.split(/\s+/).slice(1).map((m) => m.toUpperCase()) : [];
  }

  /**
   * RFC 5034 4 with RFC 4616: AUTH PLAIN and the credentials as initial response,
   * base64("" NUL user NUL password) — no authorization identity, so the server logs in `user`.
   */
  async authPlain(user: string, password: string): Promise<void> {
    if (/\0/.test(user + password)) throw new Pop3Error('a user name or password for SASL PLAIN must not contain NUL');
    const ir = Buffer.from(`\0${user}\0${password}`, 'utf8').toString('base64');
    await this.command(`AUTH PLAIN ${ir}`, 'AUTH PLAIN ****');
  }

  private async userPass(user: string, password: string): Promise<'user'> {
    await this.command(`USER ${user}`);
    await this.command(`PASS ${password}`, 'PASS ****');
    return 'user';
  }

  /** RFC 1939 7: APOP name md5(timestamp + secret). */
  async apop(user: string, password: string): Promise<void> {
    if (!this.apopTimestamp) throw new Pop3Error(`${this.label} offers no APOP (no timestamp in its greeting)`);
    const digest = createHash('md5').update(this.apopTimestamp + password, 'utf8').digest('hex');
    await this.command(`APOP ${user} ${digest}`);
  }

  async stat(): Promise<{ count: number; size: number }> {
    return parseStat(this.label, await this.command('STAT'));
  }

  /**
   * Message number → size in octets. `maxBytes` caps the listing (from STAT's count; 16 MiB at most).
   * @throws Pop3Error on a size that is not a number: it would make every size limit void.
   */
  async list(maxBytes = MAX_LISTING): Promise<Map<number, number>> {
    return this.pairs('LIST', maxBytes, (s) => listSize(this.label, s));
  }

  /**
   * RFC 1939 7: message number → unique id (UIDL is optional; -ERR throws). An id outside the
   * RFC's 1–70 printable characters is replaced by "h:" + its sha256, so it can be stored and
   * shown safely and still tells messages apart.
   */
  async uidl(maxBytes = MAX_LISTING): Promise<Map<number, string>> {
    return this.pairs('UIDL', maxBytes, uidlId);
  }

  /**
   * RETR: the message's lines go to `onLine` (streaming), or are returned joined with CRLF.
   * @throws Pop3LimitError past `maxBytes` bytes of reply (the connection is cut).
   */
  async retr(n: number, onLine?: LineHandler, maxBytes?: number): Promise<Buffer> {
    const { lines } = await this.multiline(`RETR ${n}`, onLine, { maxBytes });
    return lines.length ? Buffer.concat(lines.flatMap((l) => [l, CRLF])) : Buffer.alloc(0);
  }

  async dele(n: number): Promise<void> {
    await this.command(`DELE ${n}`);
  }

  async noop(): Promise<void> {
    await this.command('NOOP');
  }

  async rset(): Promise<void> {
    await this.command('RSET');
  }

  /** QUIT (commits DELEs, RFC 1939 6) and closes; -ERR here means the deletions failed. */
  async quit(): Promise<void> {
    try {
      await this.command('QUIT');
    } finally {
      this.close();
    }
  }

  close(): void {
    this.o.signal?.removeEventListener('abort', this.onAbort);
    this.sock.destroy();
  }

  /**
   * Sends one command and reads its single-line reply.
   * @returns the text after "+OK".
   * @throws Pop3Error on -ERR (with `response`), a malformed reply, or a broken connection.
   */
  command(line: string, shown: string = line): Promise<string> {
    return this.serial(shown, this.timeoutMs(), () => {
      this.send(line);
      return this.readStatus(shown);
    });
  }

  /**
   * Sends a command whose +OK is followed by lines up to a lone ".". Without `onLine` the lines
   * are collected and returned; with it they are handed over (and awaited) one at a time.
   * `maxBytes` (default 16 MiB) caps the reply after the status line, as sent (CRLFs, stuffing).
   * @throws Pop3LimitError past the cap, Pop3Error past the deadline; either cuts the connection.
   */
  multiline(line: string, onLine?: LineHandler, limits: { maxBytes?: number; lineMax?: number } = {}): Promise<{ status: string; lines: Buffer[] }> {
    const maxBytes = limits.maxBytes ?? MAX_LISTING;
    const rate = this.o.minBytesPerSecond ?? DEFAULT_MIN_RATE;
    const verb = line.split(' ', 2).join(' ');
    return this.serial(verb, this.timeoutMs() + Math.ceil((maxBytes / rate) * 1000), async () => {
      this.send(line);
      const status = await this.readStatus(line);
      const lines: Buffer[] = [];
      const start = this.consumed;
      const over = () => {
        const read = this.consumed + this.buffered - start;
        this.abort(new Pop3LimitError(`${this.label} sent more than ${maxBytes} bytes in reply to ${verb}; connection cut`, read, maxBytes));
        return this.failure!;
      };
      for (;;) {
        // A line may not run past what is left of the cap (nor past the longest line allowed).
        const left = maxBytes - (this.consumed - start);
        const lineMax = limits.lineMax ?? MAX_LINE;
        let l = await this.readLine(Math.min(lineMax, left), left < lineMax ? over : undefined);
        if (this.consumed - start > maxBytes) throw over();
        if (l.length === 1 && l[0] === DOT) break;
        // RFC 1939 3: a line that starts with "." had one more "." put in front of it.
        if (l[0] === DOT) l = l.subarray(1);
        if (onLine) await onLine(l);
        else lines.push(l);
      }
      return { status, lines };
    });
  }

  /**
   * One command and its whole reply at a time, whoever calls: replies are matched by order. Each
   * has `deadlineMs` from when it is sent; past it the connection is cut (the reply is lost).
   */
  private serial<T>(what: string, deadlineMs: number, run: () => Promise<T>): Promise<T> {
    const result = this.queue.then(async () => {
      const t = setTimeout(() => this.abort(new Pop3Error(`${this.label}: ${what} not finished within ${Math.round(deadlineMs / 1000)} s; connection cut`)), deadlineMs);
      try {
        return await run();
      } finally {
        clearTimeout(t);
      }
    });
    this.queue = result.then(
      () => undefined,
      () => undefined,
    );
    return result;
  }

  private async pairs<T>(cmd: string, maxBytes: number, value: (s: string) => T): Promise<Map<number, T>> {
    const { lines } = await this.multiline(cmd, undefined, { maxBytes: Math.min(maxBytes, MAX_LISTING), lineMax: MAX_REPLY_LINE });
    return parseListing(lines, value);
  }

  private timeoutMs(): number {
    return this.o.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  }

  /** Cuts the connection: nothing more is read, and every pending and later read fails with `err`. */
  private abort(err: Pop3Error): void {
    this.fail(err);
    this.sock.destroy();
  }

  private send(line: string): void {
    if (/[\r\n]/.test(line)) throw new Pop3Error('a POP3 command must not contain a line break');
    if (this.failure) throw this.failure;
    this.sock.write(line + '\r\n');
  }

  private async readStatus(what: string): Promise<string> {
    return statusText(this.label, what, printable((await this.readLine(MAX_REPLY_LINE)).toString('utf8')));
  }

  /**
   * The next line, without CRLF (or a bare LF, which some servers send). A line within one
   * socket chunk is a view of it; only a line split across chunks is copied. More than `maxLen`
   * bytes without a line end cuts the connection (with `tooLong()`'s error when given).
   */
  private async readLine(maxLen = MAX_LINE, tooLong?: () => Error): Promise<Buffer> {
    for (;;) {
      let before = this.scannedBytes;
      for (let i = this.scanned; i < this.chunks.length; i++) {
        const c = this.chunks[i]!;
        const nl = c.indexOf(LF);
        if (nl < 0) {
          before += c.length;
          continue;
        }
        let line = i === 0 ? c.subarray(0, nl) : Buffer.concat([...this.chunks.slice(0, i), c.subarray(0, nl)], before + nl);
        if (line.length && line[line.length - 1] === CR) line = line.subarray(0, line.length - 1);
        const rest = c.subarray(nl + 1);
        if (rest.length) this.chunks.splice(0, i + 1, rest);
        else this.chunks.splice(0, i + 1);
        this.buffered -= before + nl + 1;
        this.consumed += before + nl + 1;
        this.scanned = this.scannedBytes = 0;
        if (this.buffered <= HIGH_WATER && this.sock.isPaused()) this.sock.resume();
        return line;
      }
      // No line end yet: a drip's tiny chunks become one (a copy per 1024), not ~300 bytes per byte.
      if (this.chunks.length > 1024) this.chunks = [Buffer.concat(this.chunks, this.buffered)];
      this.scanned = this.chunks.length;
      this.scannedBytes = this.buffered;
      if (this.buffered > maxLen) {
        if (tooLong) throw tooLong();
        this.abort(new Pop3Error(`${this.label} sent a line longer than ${maxLen} bytes; connection cut`));
        throw this.failure!;
      }
      if (this.failure) throw this.failure;
      if (this.sock.isPaused()) this.sock.resume();
      await new Promise<void>((r) => this.waiters.push(r));
    }
  }

  private notify(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  private fail(err: Error): void {
    this.failure ??= err instanceof Pop3Error ? err : new Pop3Error(`connection to ${this.label} failed: ${err.message}`, undefined, { cause: err });
    this.notify();
  }

  private attach(sock: net.Socket): void {
    sock.on('data', this.onData);
    sock.on('error', this.onError);
    sock.on('close', this.onClose);
  }

  private detach(sock: net.Socket): void {
    sock.off('data', this.onData);
    sock.off('error', this.onError);
    sock.off('close', this.onClose);
  }
}

const CR = 0x0d;
const LF = 0x0a;
const DOT = 0x2e;
const CRLF = Buffer.from('\r\n');

function tlsOptions(o: Pop3Options): tls.ConnectionOptions {
  const name = o.servername ?? o.host;
  return {
    // SNI carries names only (RFC 6066 3); an address is still checked against the certificate.
    servername: net.isIP(name) ? undefined : name,
    ca: o.ca,
    rejectUnauthorized: o.rejectUnauthorized ?? true,
    minVersion: 'TLSv1.2',
    checkServerIdentity: (_host, cert) => tls.checkServerIdentity(name, cert),
  };
}
