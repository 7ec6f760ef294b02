// A hostile SMTP peer for tests: plain TCP on loopback, answering each command from a script.
// A reply can be drip-fed (one byte at a time) to play a server that pins its client, and
// every command it receives is recorded so a test can assert on what reached the server
// (e.g. that no AUTH was ever sent).

import net from 'node:net';

/** A reply text (CRLF added), or the same text dripped one byte every `everyMs`. */
export type Reply = string | { drip: string; everyMs: number };

export interface ScriptedPeer {
  port: number;
  /** Every command line received, in order, over all connections ("." ends a message). */
  commands: string[];
  connections: number;
  /** Connections that ended (closed by us or by the client). */
  closed: number;
  /** When each connection ended, ms since the epoch. */
  closedAt: number[];
  close(): Promise<void>;
}

/** What to answer `cmd` (upper-cased verb included as sent); null = the usual answer. */
export type Script = (cmd: string) => Reply | null;

const EHLO = '250-hostile.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 10000000';

export function normalAnswer(cmd: string): string {
  const verb = cmd.split(' ')[0]!.toUpperCase();
  switch (verb) {
    case 'EHLO': return EHLO;
    case 'HELO': return '250 hostile.test';
    case 'MAIL': case 'RCPT': case 'RSET': case 'NOOP': return '250 2.0.0 ok';
    case 'DATA': return '354 go ahead';
    case '.': return '250 2.0.0 queued as X';
    case 'QUIT': return '221 2.0.0 bye';
    default: return '502 5.5.2 not here';
  }
}

export async function startScriptedSmtp(script: Script = () => null, greeting: Reply = '220 hostile.test ESMTP'): Promise<ScriptedPeer> {
  const sockets = new Set<net.Socket>();
  const timers = new Set<NodeJS.Timeout>();
  const peer: ScriptedPeer = { port: 0, commands: [], connections: 0, closed: 0, closedAt: [], close: async () => undefined };
  const server = net.createServer((sock) => {
    peer.connections++;
    sockets.add(sock);
    sock.on('error', () => undefined);
    sock.on('close', () => {
      sockets.delete(sock);
      peer.closed++;
      peer.closedAt.push(Date.now());
    });
    // Replies go out in order, as from a real server: a pipelined command's reply waits for
    // the (dripped) one before it.
    const pending: Reply[] = [];
    let dripping = false;
    const send = (r: Reply) => {
      pending.push(r);
      if (!dripping) next();
    };
    const next = (): void => {
      for (let r = pending.shift(); r !== undefined; r = pending.shift()) {
        if (typeof r === 'string') {
          sock.write(r + '\r\n');
          continue;
        }
        const bytes = Buffer.from(r.drip + '\r\n');
        let i = 0;
        dripping = true;
        const t = setInterval(() => {
          if (sock.destroyed || i >= bytes.length) {
            clearInterval(t);
            timers.delete(t);
            dripping = false;
            if (!sock.destroyed) next();
            return;
          }
          sock.write(bytes.subarray(i, ++i));
        }, r.everyMs);
        timers.add(t);
        return;
      }
    };
    send(greeting);
    let buf = '';
    let inData = false;
    sock.on('data', (d) => {
      buf += d.toString('latin1');
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        const line = buf.slice(0, i).replace(/\r$/, '');
        buf = buf.slice(i + 1);
        if (inData && line !== '.') continue;
        inData = false;
        peer.commands.push(line);
        const r = script(line) ?? normalAnswer(line);
        if (/^354/.test(typeof r === 'string' ? r : r.drip)) inData = true;
        send(r);
        if (/^QUIT/i.test(line)) sock.end();
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  peer.port = (server.address() as net.AddressInfo).port;
  peer.close = async () => {
    for (const t of timers) clearInterval(t);
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  return peer;
}
