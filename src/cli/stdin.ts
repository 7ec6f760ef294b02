// The message on sendmail's stdin, read with read(2) on fd 0: `process.stdin` on a pipe is a
// net.Socket, and creating it loads node's net and stream modules — a few ms of every cron
// `sendmail` (issue 17). The process has nothing else to do meanwhile, so blocking is fine.

import fs from 'node:fs';

const CHUNK = 64 * 1024;

/** fd 0's bytes until EOF; process.stdin takes over when fd 0 is non-blocking (EAGAIN). */
export async function* stdinChunks(): AsyncGenerator<Buffer> {
  for (;;) {
    // A new buffer each time: the caller keeps slices of earlier chunks until it writes them.
    const buf = Buffer.allocUnsafe(CHUNK);
    let n: number;
    try {
      n = fs.readSync(0, buf, 0, CHUNK, null);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EAGAIN') {
        // Nothing was consumed by the failed read: the stream continues where we are.
        yield* process.stdin as AsyncIterable<Buffer>;
        return;
      }
      if (code === 'EOF') return;
      throw err;
    }
    if (n === 0) return;
    yield buf.subarray(0, n);
  }
}
