// A scripted POP3 server on loopback for what Dovecot cannot be made to do: no UIDL, no TOP, a
// connection dropped half-way through a RETR, a greeting that is not POP3.

import net from 'node:net';

export interface ScriptedPop3Options {
  uidl: boolean;
  top: boolean;
  /** Close the connection half-way through RETR of this message number. */
  dropOnRetr?: number;
  greeting?: string;
}

/** Serves `messages`; `left()` is the mailbox after the DELEs of sessions that ended with QUIT. */
export async function startScriptedPop3(messages: string[], o: ScriptedPop3Options): Promise<{ port: number; left: () => string[]; close: () => void }> {
  let box = [...messages];
  const server = net.createServer((sock) => {
    const deleted = new Set<number>();
    sock.write(`${o.greeting ?? '+OK fake ready'}\r\n`);
    let buf = '';
    sock.on('error', () => undefined);
    sock.on('data', (d) => {
      buf += d.toString('latin1');
      for (let i = buf.indexOf('\r\n'); i >= 0; i = buf.indexOf('\r\n')) {
        const [cmd = '', arg = ''] = buf.slice(0, i).split(' ');
        buf = buf.slice(i + 2);
        const n = Number(arg);
        const msg = box[n - 1];
        const multi = (lines: string[]) => sock.write(`+OK\r\n${lines.map((l) => (l.startsWith('.') ? '.' + l : l) + '\r\n').join('')}.\r\n`);
        switch (cmd.toUpperCase()) {
          case 'USER':
          case 'PASS':
          case 'DELE':
            if (cmd.toUpperCase() === 'DELE') deleted.add(n);
            sock.write('+OK\r\n');
            break;
          case 'CAPA':
            multi(['USER', ...(o.top ? ['TOP'] : []), ...(o.uidl ? ['UIDL'] : [])]);
            break;
          case 'LIST':
            multi(box.map((m, j) => `${j + 1} ${Buffer.byteLength(m)}`));
            break;
          case 'UIDL':
            if (o.uidl) multi(box.map((_m, j) => `${j + 1} u${j + 1}`));
            else sock.write('-ERR no UIDL here\r\n');
            break;
          case 'TOP':
            if (o.top && msg) multi(msg.split('\r\n\r\n')[0]!.split('\r\n').concat(''));
            else sock.write('-ERR no TOP here\r\n');
            break;
          case 'RETR':
            if (!msg) sock.write('-ERR no such message\r\n');
            else if (n === o.dropOnRetr) sock.end(`+OK\r\n${msg.slice(0, msg.length >> 1)}`);
            else multi(msg.replace(/\r\n$/, '').split('\r\n'));
            break;
          case 'QUIT':
            box = box.filter((_m, j) => !deleted.has(j + 1));
            sock.end('+OK bye\r\n');
            break;
          default:
            sock.write('-ERR unknown command\r\n');
        }
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as net.AddressInfo).port, left: () => box, close: () => server.close() };
}
