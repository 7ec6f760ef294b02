// A raw SMTP client for tests that need to send exactly the bytes they choose
// (malformed commands, bare LF, pipelining) and read exactly what comes back.

import net from 'node:net';
import tls from 'node:tls';

export class RawSmtp {
  private buf = '';
  private waiters: (() => void)[] = [];
  closed = false;

  private constructor(readonly sock: net.Socket) {
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => {
      this.buf += d;
      this.waiters.splice(0).forEach((w) => w());
    });
    sock.on('close', () => {
      this.closed = true;
      this.waiters.splice(0).forEach((w) => w());
    });
    sock.on('error', () => undefined);
  }

  /** `localAddress` picks the client's source address (e.g. 127.0.0.2: another client on loopback). */
  static connect(port: number, host = '127.0.0.1', localAddress?: string): Promise<RawSmtp> {
    return new Promise((resolve, reject) => {
      const s = net.createConnection({ port, host, ...(localAddress ? { localAddress } : {}) }, () => resolve(new RawSmtp(s)));
      s.once('error', reject);
    });
  }

  /** Implicit TLS (port 465 style), trusting the CA in `caFile`'s PEM. */
  static connectTls(port: number, ca: Buffer, host = '127.0.0.1'): Promise<RawSmtp> {
    return new Promise((resolve, reject) => {
      const s = tls.connect({ port, host, ca, servername: 'localhost' }, () => resolve(new RawSmtp(s)));
      s.once('error', reject);
    });
  }

  /** STARTTLS on this session; returns the client for the encrypted session (EHLO not yet sent). */
  async startTls(ca: Buffer): Promise<RawSmtp> {
    const r = await this.cmd('STARTTLS');
    if (!r.startsWith('220')) throw new Error(`STARTTLS refused: ${r}`);
    this.sock.removeAllListeners('data');
    return new Promise((resolve, reject) => {
      const s = tls.connect({ socket: this.sock, ca, servername: 'localhost' }, () => resolve(new RawSmtp(s)));
      s.once('error', reject);
    });
  }

  /** Reads one complete (possibly multi-line) reply. */
  async reply(timeoutMs = 10_000): Promise<string> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const m = /^(?:\d{3}-[^\n]*\n)*\d{3}(?: [^\n]*)?\r?\n/.exec(this.buf);
      if (m) {
        this.buf = this.buf.slice(m[0].length);
        return m[0].trimEnd();
      }
      if (this.closed) throw new Error(`connection closed; unread: ${JSON.stringify(this.buf)}`);
      if (Date.now() > end) throw new Error(`no reply within ${timeoutMs} ms; unread: ${JSON.stringify(this.buf)}`);
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 50);
      });
    }
  }

  write(raw: string | Buffer): void {
    this.sock.write(raw);
  }

  /** Sends one command line and returns its reply. */
  async cmd(line: string): Promise<string> {
    this.write(line + '\r\n');
    return this.reply();
  }

  /** Greeting + EHLO; returns the EHLO reply. */
  async hello(name = 'client.test'): Promise<string> {
    await this.reply();
    return this.cmd(`EHLO ${name}`);
  }

  close(): void {
    this.sock.destroy();
  }
}

/** Sends one message through a fresh connection; returns the reply to the end of DATA. */
export async function sendMessage(port: number, from: string, to: string[], body: string | Buffer): Promise<string> {
  const c = await RawSmtp.connect(port);
  try {
    await c.hello();
    const mail = await c.cmd(`MAIL FROM:<${from}>`);
    if (!mail.startsWith('250')) return mail;
    for (const r of to) {
      const rr = await c.cmd(`RCPT TO:<${r}>`);
      if (!rr.startsWith('250')) return rr;
    }
    const data = await c.cmd('DATA');
    if (!data.startsWith('354')) return data;
    c.write(body);
    c.write(body.slice(-2).toString() === '\r\n' ? '.\r\n' : '\r\n.\r\n');
    const res = await c.reply(60_000);
    await c.cmd('QUIT').catch(() => '');
    return res;
  } finally {
    c.close();
  }
}
