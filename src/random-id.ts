// Unguessable ids (maildrop file names) without node:crypto: loading that module — ~20 of
// node's internal modules — is a noticeable part of a cron `sendmail` (issue 17). Both sources
// are the kernel's CSPRNG: /dev/urandom, else getrandom(2) behind Web Crypto.

import fs from 'node:fs';

/** `bytes` random bytes as lowercase hex. */
export function randomHex(bytes: number): string {
  const buf = Buffer.alloc(bytes);
  try {
    const fd = fs.openSync('/dev/urandom', 'r');
    try {
      if (fs.readSync(fd, buf, 0, bytes, null) === bytes) return buf.toString('hex');
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    /* no /dev (a chroot): below */
  }
  globalThis.crypto.getRandomValues(buf);
  return buf.toString('hex');
}
