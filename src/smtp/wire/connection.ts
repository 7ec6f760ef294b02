// One SMTP connection below the commands (those are session.ts's): the greeting, reading
// command lines one at a time (a hook that answers later holds the rest, buffered in order),
// streaming DATA to the onData hook, STARTTLS's switch of sockets, the limits (idle and session
// timeouts, max_errors, early talkers) and the end. Replies to what was read in one go leave in
// one write(). The socket is paused when unread input piles up, when our replies are not being
// read (write buffer full), and when the body is read faster than it is stored.

import type { Duplex } from 'node:stream';
import type { Socket } from 'node:net';
import { BodyStream } from './body-stream.js';
import { DataReader } from './data-reader.js';
import { LineReader, TOO_LONG } from './line-reader.js';
import { ReplyWriter, replyLine } from './reply-writer.js';
import type { TlsContext } from './tls-context.js';
import type { Envelope, ReplyError, SessionHooks, SessionLimits, Verdict, WireSession } from './types.js';

/** Unread input beyond this (commands queued behind a slow one) pauses the socket. */
const INPUT_LIMIT = 64 * 1024;
/** A connection we closed waits at most this long for the client's FIN. */
const HALF_CLOSE_MS = 5000;
/** Socket errors that only mean the client went away. */
const QUIET = new Set(['ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH']);

let sessionCounter = 0;
const SESSION_PREFIX = Date.now().toString(36);

const SHUTTING_DOWN = '421 4.3.2 Server shutting down\r\n';

export const freshEnvelope = (): Envelope => ({ mailFrom: null, rcptTo: [] });

/** What a connection gets from its listener. */
export interface ConnectionSetup {
  limits: SessionLimits;
  hooks: SessionHooks;
  /** Untrusted clients wait greetDelayMs for the greeting; trusted ones are greeted at once. */
  trusted: boolean;
  /** STARTTLS is offered when set (and the session is not secure yet). */
  tls: TlsContext | null;
  /** Told once, when the socket has closed. */
  gone(c: Connection): void;
}

export abstract class Connection {
  readonly session: WireSession;
  protected readonly reader: LineReader;
  protected readonly writer: ReplyWriter;
  private readonly data = new DataReader();
  private body: BodyStream | null = null;
  private dataResult: { ok: string } | { err: ReplyError } | null = null;
  private dataEnded = false;
  private ready = false;
  protected closing = false;
  private closed = false;
  /** A hook or the message's commit is under way: later commands wait. */
  protected busy = false;
  private upgrading = false;
  private writeBlocked = false;
  private bodyFull = false;
  private paused = false;
  private errors = 0;
  /** The server is shutting down: the session ends once no transaction is under way. */
  private draining = false;
  /** The client half-closed: once what it sent is answered, we close too. */
  private inputEnded = false;
  private readonly idle: NodeJS.Timeout;
  private deadline: NodeJS.Timeout | null = null;
  /** After our close: the most we wait for the client's FIN (cleared once the socket closes). */
  private halfClose: NodeJS.Timeout | null = null;

  constructor(private socket: Duplex, remoteAddress: string, secure: boolean, protected readonly setup: ConnectionSetup) {
    this.session = {
      id: `${SESSION_PREFIX}${(++sessionCounter).toString(36)}`,
      remoteAddress,
      hostNameAppearsAs: '',
      envelope: freshEnvelope(),
      user: '',
      secure,
      esmtp: false,
      unsyncPipelining: false,
    };
    this.reader = new LineReader(setup.limits.maxCommandLength);
    this.writer = new ReplyWriter(socket);
    this.idle = setTimeout(this.onIdle, setup.limits.commandTimeoutMs);
    this.idle.unref();
  }

  /** Listens, then greets (now, or after the delay for an untrusted client). */
  start(): void {
    (this.socket as Socket).setNoDelay?.(true);
    this.listen(this.socket);
    const { limits } = this.setup;
    if (limits.sessionTimeoutMs) {
      this.deadline = setTimeout(() => this.refuseAndClose('421 4.4.2 Session time limit exceeded, closing connection\r\n'), limits.sessionTimeoutMs);
      this.deadline.unref();
    }
    const delay = this.setup.trusted ? 0 : limits.greetDelayMs;
    if (delay > 0) setTimeout(() => this.greet(), delay).unref();
    else this.greet();
  }

  /** Refused before the session starts (a connection limit): one reply, then the hang-up. */
  refuse(reply: string): void {
    this.listen(this.socket);
    this.refuseAndClose(reply);
  }

  /** Server shutdown: a session between transactions ends now, one in a transaction may finish. */
  shutdown(force: boolean): void {
    if (this.closing) return;
    this.draining = true;
    if (force || (!this.busy && !this.body && !this.session.envelope.mailFrom)) this.refuseAndClose(SHUTTING_DOWN);
  }

  private listen(s: Duplex): void {
    s.on('data', this.onData);
    s.on('end', this.onEnd);
    s.on('error', this.onError);
    s.once('close', this.onClose);
  }

  private unlisten(s: Duplex): void {
    s.off('data', this.onData);
    s.off('end', this.onEnd);
    s.off('error', this.onError);
    s.off('close', this.onClose);
  }

  private greet(): void {
    if (this.closing) return;
    const verdict = this.setup.hooks.onConnect?.(this.session);
    if (verdict && typeof (verdict as Promise<Verdict>).then === 'function') {
      this.busy = true;
      (verdict as Promise<Verdict>).then((v) => this.greeted(v), (err: ReplyError) => this.greeted(err));
    } else {
      this.greeted(verdict as Verdict);
    }
  }

  private greeted(v: Verdict): void {
    this.busy = false;
    if (this.closing) return;
    if (v) return this.refuseAndClose(replyLine(v.responseCode ?? 554, v.message));
    this.ready = true;
    this.writer.add(`220 ${this.setup.limits.name} ESMTP tidemail\r\n`);
    this.pump();
  }

  // --- input ---------------------------------------------------------------------------------

  private readonly onData = (chunk: Buffer): void => {
    if (this.closing || this.upgrading) return;
    this.idle.refresh();
    if (this.body && !this.dataEnded) return this.feedData(chunk);
    this.reader.push(chunk);
    if (!this.ready) {
      // An early talker: a whole command line before the greeting (trusted clients, greeted at
      // once, only get here while an onConnect check runs; their lines wait for the greeting).
      if (!this.setup.trusted && this.setup.limits.greetDelayMs > 0 && this.reader.nextLine() !== null) {
        this.refuseAndClose(`421 ${this.setup.limits.name} You talk too soon\r\n`);
      }
      return this.flow();
    }
    this.pump();
  };

  /** Reads and runs commands until input runs out, a hook answers later, or DATA begins. */
  protected pump(): void {
    while (this.ready && !this.busy && !this.closing && !this.writeBlocked && !this.body) {
      if (this.draining && !this.session.envelope.mailFrom) {
        this.refuseAndClose(SHUTTING_DOWN);
        return;
      }
      const line = this.reader.nextLine();
      if (line === null) break;
      if (line === TOO_LONG) {
        this.refuseAndClose('421 4.4.2 Error: Command line too long\r\n');
        return;
      }
      this.command(line);
    }
    // Half-closed and every command it sent is answered (a partial line is dropped): we end too.
    if (this.inputEnded && this.ready && !this.busy && !this.body && !this.writeBlocked) return this.close();
    this.flush();
    this.flow();
  }

  /**
   * The client's FIN (the listener allows half-open sockets): the commands it sent in full still
   * run and get their replies before we close (RFC 5321 §3.8), as for a client that waits for
   * them; a message without its final dot is not taken (close() fails its body).
   */
  private readonly onEnd = (): void => {
    this.inputEnded = true;
    if (this.closing) return;
    if (this.upgrading) return void this.socket.destroy();
    if (this.body && !this.dataEnded) return this.close();
    this.pump();
  };

  private flush(): void {
    if (this.closing || !this.writer.hasPending) return;
    this.idle.refresh();
    if (!this.writer.flush() && !this.writeBlocked) {
      // The client is not reading our replies: read nothing more from it until it does.
      this.writeBlocked = true;
      this.socket.once('drain', this.onDrain);
    }
  }

  private readonly onDrain = (): void => {
    this.writeBlocked = false;
    this.pump();
  };

  /** Pauses the socket while input piles up, replies are not read or the body is not stored. */
  private flow(): void {
    if (this.closing || this.upgrading) return;
    const pause = this.writeBlocked || this.bodyFull || this.reader.pending > INPUT_LIMIT;
    if (pause === this.paused) return;
    this.paused = pause;
    if (pause) this.socket.pause();
    else this.socket.resume();
  }

  // --- replies -------------------------------------------------------------------------------

  protected reply(code: number, text: string): void {
    this.add(replyLine(code, text), code);
  }

  /** Adds a formatted reply; counts refusals toward max_errors. */
  protected add(line: string, code: number): void {
    if (this.closing) return;
    this.writer.add(line);
    const max = this.setup.limits.maxErrors;
    if (max && code >= 400 && code !== 421 && ++this.errors >= max) {
      this.refuseAndClose(`421 4.7.0 Too many errors in this session (${max}), closing connection\r\n`);
    } else if (code === 421) {
      this.close();
    }
  }

  /** A hook's refusal; an error without a reply code is our failure, told to the log, not the client. */
  protected refuseWith(err: ReplyError): void {
    if (typeof err.responseCode === 'number') return this.reply(err.responseCode, err.message);
    this.setup.hooks.onError?.(err);
    this.reply(451, '4.3.0 Local error in processing, try again later');
  }

  protected refuseAndClose(line: string): void {
    if (this.closing) return;
    this.writer.add(line);
    this.close();
  }

  // --- DATA ----------------------------------------------------------------------------------

  /** One command line (session.ts). */
  protected abstract command(line: string): void;

  /** A new transaction: RSET, HELO/EHLO, STARTTLS, after DATA. */
  protected abstract resetTransaction(): void;

  /** After 354: what follows is message data until the dot; then the hook's reply. */
  protected beginData(): void {
    const s = this.session;
    // RFC 2920 §3.1: DATA ends a command group. Bytes already here were sent before our 354.
    s.unsyncPipelining = this.reader.pending > 0;
    this.writer.add('354 End data with <CR><LF>.<CR><LF>\r\n');
    this.dataEnded = false;
    this.dataResult = null;
    const body = (this.body = new BodyStream(this.bodyIsFull, this.bodyIsDrained));
    this.setup.hooks.onData(body, s).then(
      (ok) => this.dataDecided({ ok }),
      (err: ReplyError) => this.dataDecided({ err }),
    );
    const rest = this.reader.takeRest();
    if (rest) this.feedData(rest);
  }

  private feedData(chunk: Buffer): void {
    const body = this.body!;
    const end = this.data.feed(chunk, body.push);
    if (end === -1) return;
    this.dataEnded = true;
    body.end();
    if (end < chunk.length) this.reader.push(chunk.subarray(end));
    this.bodyFull = false;
    this.busy = true; // commands after the dot wait for the message's reply
    if (this.dataResult) this.dataDone();
    else this.flow();
  }

  private readonly bodyIsFull = (): void => {
    this.bodyFull = true;
    this.flow();
  };

  private readonly bodyIsDrained = (): void => {
    this.bodyFull = false;
    this.idle.refresh(); // the client's silence counts from when we read again
    this.flow();
  };

  private dataDecided(result: { ok: string } | { err: ReplyError }): void {
    if (this.closed) return;
    // Answered before the dot (it failed before reading, e.g. the queue could not open the
    // message): nothing reads the body any more, so it is dropped, or the session would stop
    // reading once the body buffer filled and the client would wait for command_timeout.
    if (!this.dataEnded) this.body?.discard();
    this.dataResult = result;
    if (this.dataEnded) this.dataDone();
  }

  /** The dot was read and the hook has answered: the reply, then the next commands. */
  private dataDone(): void {
    const result = this.dataResult!;
    this.body = null;
    this.dataResult = null;
    this.dataEnded = false;
    this.busy = false;
    this.session.unsyncPipelining = false;
    this.resetTransaction();
    if ('ok' in result) this.reply(250, result.ok);
    else this.refuseWith(result.err);
    this.pump();
  }

  // --- STARTTLS ------------------------------------------------------------------------------

  /** STARTTLS accepted: 220, then the handshake; the session starts over inside TLS. */
  protected startTls(): void {
    // Whatever followed STARTTLS in clear is dropped: it must not run inside the TLS session.
    this.reader.takeRest();
    this.upgrading = true;
    this.busy = true;
    const raw = this.socket as Socket;
    raw.pause(); // bytes of the handshake wait in the socket for the TLS layer
    raw.off('data', this.onData);
    this.writer.add('220 2.0.0 Ready to start TLS\r\n');
    // The handshake starts once the 220 (and any replies before it) has been written out.
    raw.write(this.writer.take(), () => this.handshake(raw));
  }

  private handshake(raw: Socket): void {
    if (this.closing || raw.destroyed) return;
    this.unlisten(raw);
    raw.on('error', this.onError); // errors of the raw socket below TLS
    const t = this.setup.tls!.wrap(raw);
    t.once('error', (err: Error) => {
      this.onError(err);
      t.destroy();
      raw.destroy();
    });
    t.once('close', this.onClose);
    t.once('secure', () => {
      if (this.closing) return;
      this.socket = t;
      this.writer.setSink(t);
      t.on('data', this.onData);
      t.on('error', this.onError);
      // RFC 3207 §4.2: nothing learnt before the handshake counts after it.
      const s = this.session;
      s.secure = true;
      s.user = '';
      s.hostNameAppearsAs = '';
      s.esmtp = false;
      this.resetTransaction();
      this.upgrading = false;
      this.busy = false;
      this.paused = false;
      this.idle.refresh();
      this.pump();
    });
  }
  // --- the end -------------------------------------------------------------------------------

  private readonly onIdle = (): void => {
    if (this.closed) return;
    if (this.closing) return void this.socket.destroy();
    // Waiting for us (a hook, the commit, a body we cannot store as fast as it comes: we paused
    // the socket, the client may be sending all along); a handshake in progress is the client's.
    if ((this.busy || this.bodyFull) && !this.upgrading) return void this.idle.refresh();
    if (this.upgrading) return void this.socket.destroy();
    this.refuseAndClose('421 4.4.2 Timeout - closing connection\r\n');
  };

  /**
   * Sends what is gathered, ends our side, and reads (discarding) until the client's FIN. After
   * QUIT nothing more may come (RFC 5321 §4.1.1.10), so the socket is closed as soon as the 221
   * and our FIN are out, as Postfix does: the client's close (often a RST: smtp-source and other
   * load clients use SO_LINGER 0) then meets a closed socket instead of costing us an error
   * object with its stack trace per connection.
   */
  protected close(afterQuit = false): void {
    if (this.closing) return;
    this.writer.flush();
    this.closing = true;
    if (this.deadline) clearTimeout(this.deadline);
    this.body?.fail(new Error('session closed before the end of the message'));
    const s = this.socket;
    if (!s.destroyed) {
      if (afterQuit) s.end(() => s.destroy());
      else s.end();
      s.resume();
    }
    this.idle.refresh();
    // Never longer than HALF_CLOSE_MS: a client that keeps its side open does not keep the slot.
    if (this.setup.limits.commandTimeoutMs > HALF_CLOSE_MS) {
      clearTimeout(this.idle);
      this.halfClose = setTimeout(() => this.socket.destroy(), HALF_CLOSE_MS);
      this.halfClose.unref();
    }
  }

  private readonly onError = (err: NodeJS.ErrnoException): void => {
    if (!err.code || !QUIET.has(err.code)) this.setup.hooks.onError?.(err);
  };

  private readonly onClose = (): void => {
    if (this.closed) return;
    this.closed = true;
    this.closing = true;
    clearTimeout(this.idle);
    if (this.deadline) clearTimeout(this.deadline);
    // A pending timer would hold this connection (socket, session, buffers) for 5 s after it
    // closed: at hundreds of connections a second, thousands of them, promoted to the old heap.
    if (this.halfClose) clearTimeout(this.halfClose);
    this.writer.discard();
    if (this.body && !this.dataEnded) this.body.fail(new Error('Connection closed before the message was received in full'));
    this.setup.gone(this);
    this.setup.hooks.onClose?.(this.session);
  };
}
