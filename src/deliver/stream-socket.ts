// nodemailer's SMTPConnection accepts an already-open `connection`, but calls socket methods
// on it (setTimeout, setKeepAlive, …). Tunnels (ssh channels, a wrapper command's stdio) are
// plain duplex streams; this gives them the few socket methods it uses.

import type { Duplex } from 'node:stream';

export function asSocket(stream: Duplex): Duplex {
  const s = stream as Duplex & Record<string, unknown>;
  let timer: NodeJS.Timeout | null = null;
  s.setTimeout ??= (ms: number, cb?: () => void) => {
    if (timer) clearTimeout(timer);
    timer = null;
    if (cb) s.once('timeout', cb);
    if (ms > 0) {
      const arm = () => {
        if (timer) clearTimeout(timer);
        timer = setTimeout(() => s.emit('timeout'), ms);
        timer.unref?.();
      };
      s.on('data', arm);
      arm();
    }
    return s;
  };
  s.setKeepAlive ??= () => s;
  s.setNoDelay ??= () => s;
  s.ref ??= () => s;
  s.unref ??= () => s;
  s.remoteAddress ??= '127.0.0.1';
  s.remotePort ??= 0;
  s.localAddress ??= '127.0.0.1';
  s.localPort ??= 0;
  s.once('close', () => timer && clearTimeout(timer));
  return s;
}
