// What the SMTP engine (src/smtp/wire/) shows the code that uses it: the session a connection
// carries, the hooks that decide on each command, and the limits of a listener. server.ts is
// the one user; the shapes follow what it read from smtp-server before, so its rules did not move.

/** MAIL FROM / RCPT TO: the address (source route dropped, IDN decoded) and its parameters. */
export interface EnvelopeAddress {
  address: string;
  /** ESMTP parameters, upper-case keys; a bare keyword is `true`. */
  args: Record<string, string | true>;
}

export interface Envelope {
  mailFrom: EnvelopeAddress | null;
  rcptTo: EnvelopeAddress[];
}

export interface WireSession {
  readonly id: string;
  readonly remoteAddress: string;
  /** The HELO/EHLO argument (lower case); '' before one was given. */
  hostNameAppearsAs: string;
  /** Replaced (never mutated in place) at RSET, HELO/EHLO, STARTTLS and after DATA. */
  envelope: Envelope;
  /** The AUTH user, '' until a login succeeded. */
  user: string;
  secure: boolean;
  /** EHLO was the opening command (for the trace header's protocol). */
  esmtp: boolean;
  /** Message bytes were already waiting as the 354 went out (RFC 2920 §3.1). */
  unsyncPipelining: boolean;
}

/** SMTP, ESMTP, ESMTPS, ESMTPA, ESMTPSA (RFC 3848). */
export function transmissionType(s: WireSession): string {
  return `${s.esmtp ? 'E' : ''}SMTP${s.secure ? 'S' : ''}${s.user ? 'A' : ''}`;
}

/** A refusal from a hook: `responseCode` and the text (an enhanced code may lead it). */
export interface ReplyError extends Error {
  responseCode?: number;
}

export type Verdict = ReplyError | null | undefined;
export type MaybeAsync<T> = T | Promise<T>;

export interface AuthAttempt {
  method: 'PLAIN' | 'LOGIN';
  username: string;
  password: string;
}

/** The decisions the engine asks for; every one may answer synchronously. */
export interface SessionHooks {
  /** Before the greeting; a refusal is sent instead of it and the connection closes. */
  onConnect?(s: WireSession): MaybeAsync<Verdict>;
  onMailFrom(a: EnvelopeAddress, s: WireSession): MaybeAsync<Verdict>;
  onRcptTo(a: EnvelopeAddress, s: WireSession): MaybeAsync<Verdict>;
  /**
   * The message, dot-unstuffed, as it streams (to be read to its end). Resolves to the text of
   * the 250 reply; a rejection's responseCode and message are the refusal.
   */
  onData(body: AsyncIterable<Buffer>, s: WireSession): Promise<string>;
  /** Resolves to the user name, or rejects with the refusal (535, 454). Unset: no AUTH. */
  onAuth?(a: AuthAttempt, s: WireSession): Promise<string>;
  /** False while there is nobody to authenticate: AUTH is neither advertised nor accepted. */
  authAvailable?(): boolean;
  /** A refusal for AUTH on this connection (in clear): AUTH is then not advertised either. */
  refuseAuth?(secure: boolean): ReplyError | null;
  onClose?(s: WireSession): void;
  /** A socket or TLS error worth a log line (not a client simply going away). */
  onError?(err: Error): void;
}

export interface SessionLimits {
  /** Our host name, in the greeting and the EHLO reply. */
  name: string;
  /** Advertised SIZE; MAIL FROM SIZE= above it is refused. */
  maxMessageSize: number;
  commandTimeoutMs: number;
  maxCommandLength: number;
  /** Whole-session deadline; 0 = none. */
  sessionTimeoutMs: number;
  /** Replies ≥ 400 (other than 421) before the session is closed with 421. */
  maxErrors: number;
  /** Greeting delay for untrusted clients; one that talks before it is an early talker. */
  greetDelayMs: number;
}
