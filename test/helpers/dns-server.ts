// A tiny authoritative DNS server on UDP loopback, standing in for the Internet's DNS in the
// direct-MX tests: answers A, AAAA, MX, TXT and SRV from a table, NXDOMAIN for names it does not
// know, NOERROR with no answers (NODATA) for a known name without records of the asked type,
// and SERVFAIL for names marked so. No traffic leaves the machine.
//
// Wire format (RFC 1035 4.1): 12-byte header, the question echoed back, then answers with
// uncompressed names and TTL 0 (so nothing is cached between tests).

import dgram from 'node:dgram';
import net from 'node:net';

export interface DnsEntry {
  A?: string[];
  AAAA?: string[];
  /** [preference, exchange]; exchange "." is the null MX (RFC 7505). */
  MX?: [number, string][];
  /** One string per TXT record (split into 255-byte chunks on the wire). */
  TXT?: string[];
  /** [priority, weight, port, target] (RFC 2782); target "." means "not offered". */
  SRV?: [number, number, number, string][];
  /** Host names, for reverse names such as "1.0.0.127.in-addr.arpa". */
  PTR?: string[];
  /** Answer SERVFAIL to every query for this name. */
  servfail?: boolean;
}

/** Lower-case names without the trailing dot → records. */
export type DnsZone = Record<string, DnsEntry>;

export interface DnsQueryLog {
  name: string;
  type: string;
}

export interface DnsServer {
  port: number;
  /** The table; change it between queries as you like. */
  zone: DnsZone;
  queries: DnsQueryLog[];
  close(): Promise<void>;
}

const TYPES: Record<number, keyof Omit<DnsEntry, 'servfail'>> = { 1: 'A', 28: 'AAAA', 15: 'MX', 16: 'TXT', 33: 'SRV', 12: 'PTR' };
const RCODE = { noerror: 0, formerr: 1, servfail: 2, nxdomain: 3 } as const;

export async function startDnsServer(zone: DnsZone, host = '127.0.0.1'): Promise<DnsServer> {
  const sock = dgram.createSocket(net.isIPv6(host) ? 'udp6' : 'udp4');
  const queries: DnsQueryLog[] = [];
  const server: DnsServer = {
    port: 0,
    zone,
    queries,
    close: () => new Promise((r) => sock.close(() => r())),
  };
  sock.on('message', (msg, rinfo) => {
    const reply = answer(msg, server.zone, queries);
    if (reply) sock.send(reply, rinfo.port, rinfo.address);
  });
  await new Promise<void>((resolve, reject) => {
    sock.once('error', reject);
    sock.bind(0, host, () => resolve());
  });
  server.port = sock.address().port;
  return server;
}

function answer(msg: Buffer, zone: DnsZone, queries: DnsQueryLog[]): Buffer | null {
  if (msg.length < 12 || msg[2]! & 0x80) return null; // too short, or a response
  const id = msg.readUInt16BE(0);
  const rd = msg[2]! & 0x01;
  const opcode = (msg[2]! >> 3) & 0x0f;
  const qd = msg.readUInt16BE(4);
  const q = qd === 1 && opcode === 0 ? readQuestion(msg, 12) : null;
  if (!q) return header(id, rd, RCODE.formerr, 0, 0);
  const type = TYPES[q.qtype] ?? `TYPE${q.qtype}`;
  queries.push({ name: q.name, type });
  const question = msg.subarray(12, q.end);
  const entry = zone[q.name];
  if (!entry) return Buffer.concat([header(id, rd, RCODE.nxdomain, 1, 0), question]);
  if (entry.servfail) return Buffer.concat([header(id, rd, RCODE.servfail, 1, 0), question]);
  const rdatas = q.qclass === 1 ? records(entry, q.qtype) : [];
  const answers = rdatas.map((rdata) => {
    const fixed = Buffer.alloc(10);
    fixed.writeUInt16BE(q.qtype, 0);
    fixed.writeUInt16BE(1, 2); // IN
    fixed.writeUInt32BE(0, 4); // TTL
    fixed.writeUInt16BE(rdata.length, 8);
    return Buffer.concat([encodeName(q.name), fixed, rdata]);
  });
  return Buffer.concat([header(id, rd, RCODE.noerror, 1, answers.length), question, ...answers]);
}

function header(id: number, rd: number, rcode: number, qd: number, an: number): Buffer {
  const h = Buffer.alloc(12);
  h.writeUInt16BE(id, 0);
  h[2] = 0x80 | 0x04 | rd; // QR, AA, RD echoed
  h[3] = 0x80 | rcode; // RA
  h.writeUInt16BE(qd, 4);
  h.writeUInt16BE(an, 6);
  return h;
}

function readQuestion(msg: Buffer, at: number): { name: string; qtype: number; qclass: number; end: number } | null {
  const labels: string[] = [];
  let i = at;
  for (;;) {
    const len = msg[i];
    if (len === undefined || len > 63) return null; // no compression in questions
    i++;
    if (len === 0) break;
    if (i + len > msg.length) return null;
    labels.push(msg.toString('latin1', i, i + len));
    i += len;
  }
  if (i + 4 > msg.length) return null;
  return { name: labels.join('.').toLowerCase(), qtype: msg.readUInt16BE(i), qclass: msg.readUInt16BE(i + 2), end: i + 4 };
}

function records(e: DnsEntry, qtype: number): Buffer[] {
  switch (TYPES[qtype]) {
    case 'A':
      return (e.A ?? []).map((a) => Buffer.from(a.split('.').map(Number)));
    case 'AAAA':
      return (e.AAAA ?? []).map(ipv6Bytes);
    case 'MX':
      return (e.MX ?? []).map(([pref, host]) => {
        const p = Buffer.alloc(2);
        p.writeUInt16BE(pref);
        return Buffer.concat([p, encodeName(host)]);
      });
    case 'TXT':
      return (e.TXT ?? []).map((t) => {
        const data = Buffer.from(t, 'utf8');
        const chunks: Buffer[] = [];
        for (let i = 0; i < data.length || i === 0; i += 255) {
          const c = data.subarray(i, i + 255);
          chunks.push(Buffer.from([c.length]), c);
        }
        return Buffer.concat(chunks);
      });
    case 'SRV':
      return (e.SRV ?? []).map(([priority, weight, port, target]) => {
        const fixed = Buffer.alloc(6);
        fixed.writeUInt16BE(priority, 0);
        fixed.writeUInt16BE(weight, 2);
        fixed.writeUInt16BE(port, 4);
        return Buffer.concat([fixed, encodeName(target)]);
      });
    case 'PTR':
      return (e.PTR ?? []).map(encodeName);
    default:
      return [];
  }
}

function encodeName(name: string): Buffer {
  const labels = name.replace(/\.$/, '').split('.').filter(Boolean);
  return Buffer.concat([...labels.map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l, 'latin1')])), Buffer.from([0])]);
}

function ipv6Bytes(text: string): Buffer {
  const [head = '', tail] = text.split('::');
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  const b = Buffer.alloc(16);
  groups.forEach((g, i) => b.writeUInt16BE(parseInt(g, 16), i * 2));
  return b;
}
