// Milter protocol packets for scripted milters in tests: 4-byte length, command byte, data.

/** A packet whose parts are NUL-terminated strings or 32-bit big-endian numbers. */
export const pkt = (cmd: string, ...parts: (string | number)[]): Buffer => {
  const data = Buffer.concat(parts.map((p) => {
    if (typeof p === 'number') {
      const b = Buffer.alloc(4);
      b.writeUInt32BE(p);
      return b;
    }
    return Buffer.from(p + '\0');
  }));
  const h = Buffer.alloc(5);
  h.writeUInt32BE(data.length + 1);
  h.write(cmd, 4, 'latin1');
  return Buffer.concat([h, data]);
};

/** A packet with `data` as is (no NUL added). */
export const raw = (cmd: string, data: string): Buffer => {
  const h = Buffer.alloc(5);
  h.writeUInt32BE(Buffer.byteLength(data) + 1);
  h.write(cmd, 4, 'latin1');
  return Buffer.concat([h, Buffer.from(data)]);
};
