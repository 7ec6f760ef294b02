// A scripted hostile POP3 server on loopback: a peer that lies about sizes and never stops
// talking. It logs in anyone, lists one or more small messages, and answers the command the test
// picks with an endless stream (respecting backpressure, so "bytes sent" means what the client
// side's kernel took), a drip of one byte at a time, or a line with no end. It counts the bytes
// it got out and records every command, so a test can see that no DELE or QUIT came.

import net from 'node:net';

export type Hostility =
  /** RETR of message `badMessage`: "+OK" then lines forever. */
  | 'endless-retr'
  /** UIDL: "+OK" then "n uidN" lines forever. */
  | 'endless-uidl'
  /** RETR of `badMessage`: "+OK" then one byte every `dripMs`. */
  | 'drip-retr'
  /** LIST: "+OK" then bytes without a line ending, forever. */
  | 'long-line'
  /** PASS: an -ERR carrying terminal escape sequences. */
  | 'escape-err'
  /** PASS: an -ERR echoing the password, as it came and as AUTH PLAIN's base64 of user "u". */
  | 'echo-err'
  /** RETR of `badMessage` sends twice what LIST said, then ends properly. */
  | 'slightly-larger';

export interface HostileOptions {
  hostility: Hostility;
  /** How many messages LIST shows (each listed as 200 bytes). */
  messages?: number;
  badMessage?: number;
  dripMs?: number;
}

export interface HostilePop3 {
  port: number;
  /** Every command line received, in order, over all connections (PASS shown as "PASS ****"). */
  commands: string[];
  /** Bytes the server wrote that the socket accepted, over all connections. */
  sent(): number;
  connections: number;
  /** Connections that ended (closed by the client or by error). */
  closed: number;
  close(): Promise<void>;
}

export const SMALL = (n: number) => `From: a@example.test\r\nSubject: small ${n}\r\nMessage-ID: <small${n}@example.test>\r\n\r\nhello ${n}\r\n`;

export async function startHostilePop3(o: HostileOptions): Promise<HostilePop3> {
  const count = o.messages ?? 1;
  const bad = o.badMessage ?? 1;
  let sent = 0;
  const sockets = new Set<net.Socket>();
  const h: HostilePop3 = {
    port: 0,
    commands: [],
    sent: () => sent,
    connections: 0,
    closed: 0,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
  const server = net.createServer((sock) => {
    h.connections++;
    sockets.add(sock);
    let open = true;
    let timer: NodeJS.Timeout | undefined;
    const ended = () => {
      if (!open) return;
      open = false;
      clearInterval(timer);
      h.closed++;
      sockets.delete(sock);
    };
    sock.on('error', ended);
    sock.on('close', ended);
    const write = (s: string | Buffer) => {
      if (!open) return true;
      const b = typeof s === 'string' ? Buffer.from(s, 'latin1') : s;
      sent += b.length;
      return sock.write(b);
    };
    /** Writes `chunk()` whenever the socket can take more, until the connection ends. */
    const forever = (head: string, chunk: () => Buffer) => {
      write(head);
      const pump = () => {
        while (open && write(chunk()));
        if (open) sock.once('drain', pump);
      };
      pump();
    };
    const multi = (lines: string[]) => write(`+OK\r\n${lines.map((l) => l + '\r\n').join('')}.\r\n`);
    write('+OK hostile ready\r\n');
    let buf = '';
    sock.on('data', (d) => {
      buf += d.toString('latin1');
      for (let i = buf.indexOf('\r\n'); i >= 0; i = buf.indexOf('\r\n')) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const [cmd = '', arg = ''] = line.split(' ');
        const verb = cmd.toUpperCase();
        h.commands.push(verb === 'PASS' ? 'PASS ****' : line);
        const n = Number(arg);
        switch (verb) {
          case 'CAPA':
            multi(['USER', 'UIDL', 'TOP']);
            break;
          case 'USER':
            write('+OK\r\n');
            break;
          case 'PASS':
            if (o.hostility === 'escape-err') write('-ERR \x1b[2J\x1b]0;owned\x07bad\x1b[31m password\x9b1m\r\n');
            else if (o.hostility === 'echo-err') write(`-ERR [AUTH] you sent ${arg} = ${Buffer.from(`\0u\0${arg}`).toString('base64')}, wrong\r\n`);
            else write('+OK logged in\r\n');
            break;
          case 'STAT':
            write(`+OK ${count} ${count * 200}\r\n`);
            break;
          case 'LIST':
            if (o.hostility === 'long-line') {
              const junk = Buffer.alloc(64 * 1024, 0x41);
              forever('+OK\r\n', () => junk);
            } else multi(Array.from({ length: count }, (_x, j) => `${j + 1} 200`));
            break;
          case 'UIDL':
            if (o.hostility === 'endless-uidl') {
              let k = 0;
              forever('+OK\r\n', () => Buffer.from(Array.from({ length: 512 }, () => `${++k} uid${k}\r\n`).join('')));
            } else multi(Array.from({ length: count }, (_x, j) => `${j + 1} u${j + 1}`));
            break;
          case 'TOP':
            write(`+OK\r\n${SMALL(n).split('\r\n\r\n')[0]}\r\n\r\n.\r\n`);
            break;
          case 'RETR':
            if (n === bad && o.hostility === 'endless-retr') {
              const body = Buffer.from(`${'x'.repeat(76)}\r\n`.repeat(800));
              forever(`+OK 200 octets\r\nSubject: endless\r\n\r\n`, () => body);
            } else if (n === bad && o.hostility === 'drip-retr') {
              write('+OK 200 octets\r\nSubject: drip\r\n\r\n');
              timer = setInterval(() => write('y'), o.dripMs ?? 200);
            } else if (n === bad && o.hostility === 'slightly-larger') {
              write(`+OK\r\nSubject: larger\r\n\r\n${'z'.repeat(76).concat('\r\n').repeat(5)}.\r\n`);
            } else if (n >= 1 && n <= count) {
              write(`+OK\r\n${SMALL(n)}.\r\n`);
            } else write('-ERR no such message\r\n');
            break;
          case 'DELE':
            write('+OK\r\n');
            break;
          case 'QUIT':
            write('+OK bye\r\n');
            sock.end();
            break;
          default:
            write('-ERR unknown command\r\n');
        }
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  h.port = (server.address() as net.AddressInfo).port;
  return h;
}
