// The SMTP commands of a session (RFC 5321 with PIPELINING, 8BITMIME, SMTPUTF8, SIZE, DSN,
// ENHANCEDSTATUSCODES, STARTTLS and AUTH PLAIN/LOGIN) on top of connection.ts: what each command
// checks, which hook decides, and the reply. Replies and their wording follow smtp-server's, which
// the tests and clients' scripts were written against.

import { parseMailFrom, parseRcptTo } from './address-command.js';
import { Connection, freshEnvelope } from './connection.js';
import { isHeloName } from './peer-text.js';
import { replyLine, replyLines } from './reply-writer.js';
import { continueSasl, startSasl, type SaslResult, type SaslStep } from './sasl.js';
import type { Envelope, EnvelopeAddress, ReplyError, Verdict } from './types.js';

const HELO_MAX = 300;
const SPACES = /\s+/;
const HTTP_REQUEST = /^(OPTIONS|GET|HEAD|POST|PUT|DELETE|TRACE|CONNECT) \/.* HTTP\/\d\.\d$/i;

export class SmtpSession extends Connection {
  private sasl: SaslStep = null;
  /** Lower-cased recipient → its place in envelope.rcptTo (a repeated RCPT replaces the entry). */
  private rcptIndex: Map<string, number> | null = null;

  // --- commands ------------------------------------------------------------------------------

  protected command(line: string): void {
    if (this.sasl) return this.saslLine(line);
    const sp = line.indexOf(' ');
    const verb = (sp === -1 ? line : line.slice(0, sp)).toUpperCase();
    switch (verb) {
      case 'EHLO':
      case 'HELO':
        return this.helo(verb, line);
      case 'MAIL':
        return this.needHelo() ? undefined : this.mail(line);
      case 'RCPT':
        return this.needHelo() ? undefined : this.rcpt(line);
      case 'DATA':
        if (this.needHelo()) return;
        if (!this.session.envelope.rcptTo.length) return this.reply(503, 'Error: need RCPT command');
        return this.beginData();
      case 'RSET':
        this.resetTransaction();
        return this.reply(250, 'Flushed');
      case 'NOOP':
        return this.reply(250, 'OK');
      case 'QUIT':
        this.writer.add('221 2.0.0 Bye\r\n');
        return this.close(true);
      case 'HELP':
        return this.reply(214, 'See https://tools.ietf.org/html/rfc5321 for details');
      case 'VRFY':
        if (!line.trim().split(SPACES)[1]) return this.reply(501, 'Error: Syntax: VRFY address');
        return this.reply(252, 'Try to send something. No promises though');
      case 'STARTTLS':
        if (!this.setup.tls) break;
        if (line.trim().split(SPACES).length > 1) return this.reply(501, 'Error: syntax: STARTTLS');
        if (this.session.secure) return this.reply(503, 'Error: TLS already active');
        return this.startTls();
      case 'AUTH':
        if (this.setup.hooks.onAuth) return this.needHelo() ? undefined : this.auth(line);
        break;
    }
    // Web pages that make a browser talk to port 25 (cross-protocol attacks) are sent away.
    if (HTTP_REQUEST.test(line)) return this.refuseAndClose('421 4.4.2 HTTP requests not allowed\r\n');
    this.reply(500, 'Error: command not recognized');
  }

  private needHelo(): boolean {
    if (this.session.hostNameAppearsAs) return false;
    this.reply(503, 'Error: send HELO/EHLO first');
    return true;
  }

  private helo(verb: 'EHLO' | 'HELO', line: string): void {
    const parts = line.trim().split(SPACES);
    const host = parts[1] ?? '';
    if (parts.length !== 2) return this.add(replyLine(501, verb === 'EHLO' ? 'Error: syntax: EHLO hostname' : 'Error: Syntax: HELO hostname', true), 501);
    if (host.length > HELO_MAX || !isHeloName(host)) return this.add(replyLine(501, 'Error: Bad hostname syntax', true), 501);
    const s = this.session;
    s.hostNameAppearsAs = host.toLowerCase();
    s.esmtp = verb === 'EHLO';
    this.resetTransaction();
    const hello = `${this.setup.limits.name} Nice to meet you, [${s.remoteAddress}]`;
    if (verb === 'HELO') return this.add(replyLine(250, hello, true), 250);
    this.add(replyLines(250, this.features(hello)), 250);
  }

  private features(hello: string): string[] {
    const { hooks, tls, limits } = this.setup;
    const s = this.session;
    const f = [hello, 'PIPELINING', '8BITMIME', 'SMTPUTF8', 'ENHANCEDSTATUSCODES', 'DSN'];
    if (hooks.onAuth && !s.user && hooks.authAvailable?.() !== false && !hooks.refuseAuth?.(s.secure)) f.push('AUTH PLAIN LOGIN');
    if (tls && !s.secure) f.push('STARTTLS');
    if (limits.maxMessageSize) f.push(`SIZE ${limits.maxMessageSize}`);
    return f;
  }

  protected resetTransaction(): void {
    this.session.envelope = freshEnvelope();
    this.rcptIndex = null;
  }

  private mail(line: string): void {
    const parsed = parseMailFrom(line, this.setup.limits.maxMessageSize);
    if ('error' in parsed) return this.add(parsed.error, Number(parsed.error.slice(0, 3)));
    if (this.session.envelope.mailFrom) return this.reply(503, 'Error: nested MAIL command');
    this.decide(this.setup.hooks.onMailFrom(parsed.ok, this.session), parsed.ok, this.mailDecided);
  }

  private readonly mailDecided = (v: Verdict, a: EnvelopeAddress): void => {
    if (v) return this.refuseWith(v);
    this.session.envelope.mailFrom = a;
    this.reply(250, '2.1.0 Accepted');
  };

  private rcpt(line: string): void {
    const parsed = parseRcptTo(line);
    if ('error' in parsed) return this.add(parsed.error, Number(parsed.error.slice(0, 3)));
    if (!this.session.envelope.mailFrom) return this.reply(503, 'Error: need MAIL command');
    this.decide(this.setup.hooks.onRcptTo(parsed.ok, this.session), parsed.ok, this.rcptDecided);
  }

  private readonly rcptDecided = (v: Verdict, a: EnvelopeAddress): void => {
    if (v) return this.refuseWith(v);
    // A repeated recipient (in any case) replaces the earlier entry.
    const rcpts = this.session.envelope.rcptTo;
    const key = a.address.toLowerCase();
    const index = (this.rcptIndex ??= new Map());
    const at = index.get(key);
    if (at !== undefined && rcpts[at]?.address.toLowerCase() === key) rcpts[at] = a;
    else index.set(key, rcpts.push(a) - 1);
    this.reply(250, '2.1.5 Accepted');
  };

  /** Runs `then` with a hook's verdict now, or when its promise settles (later commands wait). */
  private decide(v: Verdict | Promise<Verdict>, a: EnvelopeAddress, then: (v: Verdict, a: EnvelopeAddress) => void): void {
    if (!v || typeof (v as Promise<Verdict>).then !== 'function') return then(v as Verdict, a);
    this.busy = true;
    const envelope = this.session.envelope;
    (v as Promise<Verdict>).then(
      (verdict) => this.decided(verdict, a, then, envelope),
      (err: ReplyError) => this.decided(err, a, then, envelope),
    );
  }

  private decided(v: Verdict, a: EnvelopeAddress, then: (v: Verdict, a: EnvelopeAddress) => void, envelope: Envelope): void {
    this.busy = false;
    if (this.closing) return;
    if (envelope === this.session.envelope) then(v, a);
    this.pump();
  }


  private auth(line: string): void {
    const { hooks } = this.setup;
    const s = this.session;
    const args = line.trim().split(SPACES);
    const method = (args[1] ?? '').toUpperCase();
    if (hooks.authAvailable?.() === false) return this.reply(503, '5.5.1 AUTH is not available here (no users are set up)');
    const refusal = hooks.refuseAuth?.(s.secure);
    if (refusal) return this.reply(refusal.responseCode ?? 538, refusal.message);
    if (s.user) return this.reply(503, 'Error: No identity changes permitted');
    if (method !== 'PLAIN' && method !== 'LOGIN') return this.reply(504, 'Error: Unrecognized authentication type');
    this.saslResult(startSasl(method, args.slice(2)));
  }

  private saslLine(line: string): void {
    const step = this.sasl!;
    this.sasl = null;
    this.saslResult(continueSasl(step, line));
  }

  private saslResult(r: SaslResult): void {
    if ('reply' in r) return this.add(r.reply, 501);
    if ('challenge' in r) {
      this.sasl = r.next;
      return this.add(r.challenge, 334);
    }
    this.busy = true;
    this.setup.hooks.onAuth!(r.attempt, this.session).then(
      (user) => this.authDecided(user, null),
      (err: ReplyError) => this.authDecided('', err),
    );
  }

  private authDecided(user: string, err: ReplyError | null): void {
    this.busy = false;
    if (this.closing) return;
    if (err) this.refuseWith(err);
    else if (!user) this.reply(535, 'Error: Authentication credentials invalid');
    else {
      this.session.user = user;
      this.reply(235, 'Authentication successful');
    }
    this.pump();
  }
}
