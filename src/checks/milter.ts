// Milter protocol client (libmilter protocol version 6, as sendmail 8.14+ and Postfix speak it),
// so rspamd, OpenDKIM or clamav-milter plug in. There is no spec besides libmilter's
// `mfdef.h`/`engine.c`; the names below are theirs.
//
// Wire format: every packet is a 4-byte big-endian length (counting the command byte), one
// command byte, then data. Strings are NUL-terminated. The MTA opens with OPTNEG (version,
// actions it allows, protocol steps the filter may skip); the filter answers with the subset it
// wants. Then per connection CONNECT, HELO; per message MAIL, RCPT…, DATA, HEADER…, EOH,
// BODY… (≤ 64 KiB each), EOM; ABORT resets the message, QUIT ends. Each step gets one reply
// unless the filter asked for "no reply" (SMFIP_NR_*); at EOM, modification replies
// (ADDHEADER, CHGHEADER, INSHEADER, REPLBODY, QUARANTINE) come before the final one.

import net from 'node:net';
import type { Verdict } from './check.js';

const VERSION = 6;
// Actions we allow the filter (SMFIF_*): add/change headers, replace body, quarantine.
const SMFIF_ADDHDRS = 0x1, SMFIF_CHGBODY = 0x2, SMFIF_CHGHDRS = 0x10, SMFIF_QUARANTINE = 0x20;
const ACTIONS = SMFIF_ADDHDRS | SMFIF_CHGBODY | SMFIF_CHGHDRS | SMFIF_QUARANTINE;
// Protocol steps (SMFIP_*): the filter may skip a step (NO*) or its reply (NR_*).
const P = {
  NOCONNECT: 0x1, NOHELO: 0x2, NOMAIL: 0x4, NORCPT: 0x8, NOBODY: 0x10, NOHDRS: 0x20, NOEOH: 0x40,
  NR_HDR: 0x80, NOUNKNOWN: 0x100, NODATA: 0x200, SKIP: 0x400,
  NR_CONN: 0x1000, NR_HELO: 0x2000, NR_MAIL: 0x4000, NR_RCPT: 0x8000, NR_DATA: 0x10000,
  NR_EOH: 0x40000, NR_BODY: 0x80000,
} as const;
// Everything above: we never send UNKNOWN, so it is offered as skippable too.
const PROTOCOL = Object.values(P).reduce((a, b) => a | b, 0);
/** libmilter's MILTER_CHUNK_SIZE. */
export const BODY_CHUNK = 65535;

type Stage = 'connect' | 'helo' | 'mail' | 'rcpt' | 'data' | 'header' | 'eoh' | 'body' | 'eom';
const CMD: Record<Stage, string> = { connect: 'C', helo: 'H', mail: 'M', rcpt: 'R', data: 'T', header: 'L', eoh: 'N', body: 'B', eom: 'E' };
const SKIP_STEP: Partial<Record<Stage, number>> = {
  connect: P.NOCONNECT, helo: P.NOHELO, mail: P.NOMAIL, rcpt: P.NORCPT, data: P.NODATA,
  header: P.NOHDRS, eoh: P.NOEOH, body: P.NOBODY,
};
const NO_REPLY: Partial<Record<Stage, number>> = {
  connect: P.NR_CONN, helo: P.NR_HELO, mail: P.NR_MAIL, rcpt: P.NR_RCPT, data: P.NR_DATA,
  header: P.NR_HDR, eoh: P.NR_EOH, body: P.NR_BODY,
};

export type Macros = Readonly<Record<string, string>>;

export interface MilterOptions {
  /** `inet:PORT@HOST`, `inet6:PORT@HOST`, `unix:/path`, `/path` or `host:port`. */
  address: string;
  /** Deadline for one reply in ms (default 10 s, sendmail's T=R). */
  timeoutMs?: number;
  /** Deadline for the end-of-message reply in ms (default 5 min, sendmail's T=E). */
  endTimeoutMs?: number;
}

export interface HeaderChange {
  /** 1-based occurrence of `name` (CHGHEADER) or position in the header (INSHEADER, 0 = top). */
  index: number;
  name: string;
  /** Empty value on CHGHEADER deletes the header. */
  value: string;
}

export interface MilterResult {
  /**
   * The filter's last word. `accept` is libmilter's SMFIS_ACCEPT ("no further filtering"):
   * OpenDKIM answers it after signing, so callers usually read it as "no objection" rather than
   * as a reason to skip their other checks.
   */
  verdict: Verdict;
  /** ADDHEADER: append at the end of the header. */
  addHeaders: { name: string; value: string }[];
  /** INSHEADER: insert at `index`. */
  insertHeaders: HeaderChange[];
  /** CHGHEADER: change (or delete, when value is empty) the index-th `name`. */
  changeHeaders: HeaderChange[];
  /** REPLBODY: the new body, in the order received. */
  replaceBody?: Buffer[];
  /** DISCARD: accept, then drop the message silently. */
  discard?: boolean;
  quarantine?: string;
}

interface Frame {
  cmd: string;
  data: Buffer;
}

function socketTarget(address: string): net.NetConnectOpts {
  let m = /^inet6?:(\d+)@\[?([^\]]+)\]?$/.exec(address);
  if (m) return { host: m[2]!, port: Number(m[1]) };
  if (/^(unix|local):/.test(address)) return { path: address.replace(/^(unix|local):/, '') };
  if (address.startsWith('/')) return { path: address };
  m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(address);
  if (m) return { host: m[1]!, port: Number(m[2]) };
  throw new Error(`milter address "${address}" not understood`);
}

const cstr = (s: string) => Buffer.concat([Buffer.from(s, 'utf8'), Buffer.of(0)]);
const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
};
function frame(cmd: string, ...parts: Buffer[]): Buffer {
  const data = Buffer.concat(parts);
  return Buffer.concat([u32(data.length + 1), Buffer.from(cmd, 'latin1'), data]);
}
/** NUL-separated strings of a packet. */
function strings(data: Buffer): string[] {
  const s = data.toString('utf8');
  return (s.endsWith('\0') ? s.slice(0, -1) : s).split('\0');
}

/** Maps a REPLYCODE text ("550 5.7.1 text") to a verdict; 421 closes the session as sendmail does. */
export function replyCodeVerdict(reply: string): Verdict {
  const m = /^([45]\d\d)(?:[ -]([45]\.\d{1,3}\.\d{1,3}))?\s*(.*)$/s.exec(reply.trim());
  if (!m) return { action: 'tempfail', code: 451, enhanced: '4.7.1', text: 'Milter returned a malformed reply' };
  const code = Number(m[1]);
  const cls = m[1]![0]!;
  const enhanced = m[2] ?? `${cls}.7.1`;
  const text = m[3]!.replace(/\r?\n/g, ' ') || (cls === '5' ? 'Command rejected' : 'Try again later');
  if (code === 421) return { action: 'disconnect', code, enhanced, text };
  return { action: cls === '5' ? 'reject' : 'tempfail', code, enhanced, text };
}

const REJECT: Verdict = { action: 'reject', code: 550, enhanced: '5.7.1', text: 'Command rejected' };
const TEMPFAIL: Verdict = { action: 'tempfail', code: 451, enhanced: '4.7.1', text: 'Try again later' };
const SHUTDOWN: Verdict = { action: 'disconnect', code: 421, enhanced: '4.7.0', text: 'Milter shut down the session' };

/** One SMTP session's conversation with a milter. Not safe for concurrent calls. */
export interface MilterSession {
  /** Negotiated protocol flags (SMFIP_*), for logs and tests. */
  readonly protocol: number;
  /** `family`: '4' | '6' | 'L' (unix) | 'U' (unknown). */
  connect(hostname: string, address: string, port?: number, family?: '4' | '6' | 'L' | 'U', macros?: Macros): Promise<Verdict>;
  helo(name: string, macros?: Macros): Promise<Verdict>;
  mail(sender: string, args?: string[], macros?: Macros): Promise<Verdict>;
  rcpt(recipient: string, args?: string[], macros?: Macros): Promise<Verdict>;
  /** `value` without the space after the colon; folded lines keep their line breaks. */
  header(name: string, value: string): Promise<Verdict>;
  endHeaders(): Promise<Verdict>;
  /** Body bytes in SMTP form (CRLF line ends, no dot-stuffing); split into ≤ 64 KiB packets. */
  body(chunk: Buffer): Promise<Verdict>;
  endMessage(macros?: Macros): Promise<MilterResult>;
  /** Forgets the current message (RSET, or before the next MAIL); the connection stays. */
  abort(): Promise<void>;
  /** QUIT and close. */
  close(): Promise<void>;
}

/**
 * Connects and negotiates options.
 * @throws Error when the milter cannot be reached, times out or breaks the protocol; callers turn
 * that into a tempfail (or skip the milter, by their policy).
 */
export async function openMilterSession(opts: MilterOptions): Promise<MilterSession> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const endTimeoutMs = opts.endTimeoutMs ?? 300_000;
  const socket = net.connect(socketTarget(opts.address));
  let pending: Buffer = Buffer.alloc(0);
  const frames: Frame[] = [];
  let wake: (() => void) | null = null;
  let failure: Error | null = null;
  const fail = (err: Error) => {
    failure ??= err;
    socket.destroy();
    wake?.();
  };
  socket.on('data', (d: Buffer) => {
    pending = pending.length ? Buffer.concat([pending, d]) : d;
    while (pending.length >= 4) {
      const len = pending.readUInt32BE(0);
      if (len < 1 || len > 64 * 1024 * 1024) return fail(new Error(`milter ${opts.address}: bad packet length ${len}`));
      if (pending.length < 4 + len) break;
      frames.push({ cmd: String.fromCharCode(pending[4]!), data: pending.subarray(5, 4 + len) });
      pending = pending.subarray(4 + len);
    }
    wake?.();
  });
  socket.on('error', (err) => fail(err));
  socket.on('close', () => fail(new Error(`milter ${opts.address} closed the connection`)));
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });

  const read = async (ms: number): Promise<Frame> => {
    const end = Date.now() + ms;
    while (!frames.length) {
      if (failure) throw failure;
      const left = end - Date.now();
      if (left <= 0) {
        fail(new Error(`milter ${opts.address}: no reply within ${ms} ms`));
        throw failure!;
      }
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        wake = () => (clearTimeout(t), r());
      });
      wake = null;
    }
    return frames.shift()!;
  };
  const send = (buf: Buffer) => {
    if (failure) throw failure;
    socket.write(buf);
  };

  // Option negotiation.
  send(frame('O', u32(VERSION), u32(ACTIONS), u32(PROTOCOL)));
  const neg = await read(timeoutMs);
  if (neg.cmd !== 'O' || neg.data.length < 12) throw (fail(new Error(`milter ${opts.address}: bad OPTNEG reply '${neg.cmd}'`)), failure!);
  const version = neg.data.readUInt32BE(0);
  if (version < 2) throw (fail(new Error(`milter ${opts.address}: protocol version ${version} too old`)), failure!);
  const actions = neg.data.readUInt32BE(4) & ACTIONS;
  const protocol = neg.data.readUInt32BE(8) & PROTOCOL;

  let skipBody = false;
  let dataSent = false;
  // A non-next verdict for the message (ACCEPT/DISCARD/REJECT/…): later steps are not sent.
  let settled: Verdict | null = null;
  let discard = false;
  // ACCEPT at CONNECT/HELO: the filter wants nothing more from this connection.
  let connectionDone = false;

  /** Reads replies until a final one; PROGRESS restarts the clock, modifications are collected. */
  const reply = async (ms: number, result?: MilterResult): Promise<Verdict> => {
    for (;;) {
      const f = await read(ms);
      const s = strings(f.data);
      switch (f.cmd) {
        case 'c': return { action: 'next' };
        case 'a': return { action: 'accept' };
        case 'r': return REJECT;
        case 't': return TEMPFAIL;
        case 'd': discard = true; return { action: 'accept' };
        case 'y': return replyCodeVerdict(s[0] ?? '');
        case '4': return SHUTDOWN;
        case 'f': return TEMPFAIL; // CONNFAIL
        case 's': skipBody = true; return { action: 'next' }; // SKIP: no more body
        case 'p': continue; // PROGRESS
        case 'h':
          if (result && actions & SMFIF_ADDHDRS) result.addHeaders.push({ name: s[0] ?? '', value: s[1] ?? '' });
          continue;
        case 'i':
          if (result && actions & SMFIF_ADDHDRS) {
            const [name = '', value = ''] = strings(f.data.subarray(4));
            result.insertHeaders.push({ index: f.data.readUInt32BE(0), name, value });
          }
          continue;
        case 'm':
          if (result && actions & SMFIF_CHGHDRS) {
            const [name = '', value = ''] = strings(f.data.subarray(4));
            result.changeHeaders.push({ index: f.data.readUInt32BE(0), name, value });
          }
          continue;
        case 'b':
          if (result && actions & SMFIF_CHGBODY) (result.replaceBody ??= []).push(Buffer.from(f.data));
          continue;
        case 'q':
          if (result) result.quarantine = s[0] ?? '';
          continue;
        default:
          // ADDRCPT, DELRCPT, CHGFROM, SETSYMLIST were not offered: a filter sending them is broken.
          fail(new Error(`milter ${opts.address}: unexpected reply '${f.cmd}'`));
          throw failure!;
      }
    }
  };

  const macroFrame = (stage: Stage, macros?: Macros) => {
    if (!macros || !Object.keys(macros).length) return;
    const parts = [Buffer.from(CMD[stage], 'latin1')];
    for (const [k, v] of Object.entries(macros)) parts.push(cstr(k.length > 1 && !k.startsWith('{') ? `{${k}}` : k), cstr(v));
    send(frame('D', ...parts));
  };

  /** Sends one step unless the filter skips it; waits for its reply unless it asked for none. */
  const step = async (stage: Stage, data: Buffer[], macros?: Macros): Promise<Verdict> => {
    if (connectionDone) return { action: 'next' };
    // After ACCEPT the filter has no objection left; after a refusal the refusal stands.
    if (settled) return settled.action === 'accept' && !discard ? { action: 'next' } : settled;
    if (stage !== 'connect' && stage !== 'helo' && stage !== 'mail' && stage !== 'rcpt' && stage !== 'data' && !dataSent) {
      dataSent = true;
      const v = await step('data', []);
      if (v.action !== 'next') return v;
    }
    const skip = SKIP_STEP[stage];
    if (skip && protocol & skip) return { action: 'next' };
    macroFrame(stage, macros);
    send(frame(CMD[stage], ...data));
    const nr = NO_REPLY[stage];
    if (nr && protocol & nr) return { action: 'next' };
    const v = await reply(timeoutMs);
    // libmilter: ACCEPT at a connection step covers the connection, at a message step the
    // message; REJECT/TEMPFAIL at RCPT concern that recipient only.
    if (v.action === 'accept' && (stage === 'connect' || stage === 'helo') && !discard) connectionDone = true;
    else if (v.action !== 'next' && !(stage === 'rcpt' && v.action !== 'accept') && stage !== 'connect' && stage !== 'helo') settled = v;
    return v;
  };

  // A message the filter has seen MAIL for but no EOM reply: the next MAIL must ABORT it first.
  let inMessage = false;
  const resetMessage = () => {
    settled = null;
    discard = false;
    skipBody = false;
    dataSent = false;
  };
  const angle = (a: string) => (a.startsWith('<') ? a : `<${a}>`);

  return {
    protocol,
    connect: (hostname, address, port = 0, family = net.isIPv6(address) ? '6' : net.isIPv4(address) ? '4' : 'U', macros) => {
      const port16 = Buffer.alloc(2);
      port16.writeUInt16BE(port);
      const tail = family === 'U' ? [] : [port16, cstr(address)];
      return step('connect', [cstr(hostname), Buffer.from(family, 'latin1'), ...tail], macros);
    },
    helo: (name, macros) => step('helo', [cstr(name)], macros),
    mail: (sender, args = [], macros) => {
      if (inMessage && !connectionDone && !failure) send(frame('A'));
      resetMessage();
      inMessage = true;
      return step('mail', [cstr(angle(sender)), ...args.map(cstr)], macros);
    },
    rcpt: (recipient, args = [], macros) => step('rcpt', [cstr(angle(recipient)), ...args.map(cstr)], macros),
    header: (name, value) => step('header', [cstr(name), cstr(value)]),
    endHeaders: () => step('eoh', []),
    async body(chunk) {
      for (let off = 0; off < chunk.length && !skipBody; off += BODY_CHUNK) {
        const v = await step('body', [chunk.subarray(off, off + BODY_CHUNK)]);
        if (v.action !== 'next') return v;
      }
      return { action: 'next' };
    },
    async endMessage(macros) {
      let eomSent = false;
      const result: MilterResult = { verdict: { action: 'next' }, addHeaders: [], insertHeaders: [], changeHeaders: [] };
      if (connectionDone) {
        result.verdict = { action: 'next' };
      } else if (settled) {
        result.verdict = settled;
      } else {
        let v: Verdict = { action: 'next' };
        if (!dataSent) {
          dataSent = true;
          v = await step('data', []);
        }
        if (v.action === 'next') {
          macroFrame('eom', macros);
          send(frame('E'));
          eomSent = true;
          v = await reply(endTimeoutMs, result);
        }
        result.verdict = v;
      }
      if (discard) result.discard = true;
      // Without an EOM the filter still holds the message: tell it the message is gone.
      if (!eomSent && inMessage && !connectionDone && !failure) send(frame('A'));
      inMessage = false;
      resetMessage();
      return result;
    },
    async abort() {
      resetMessage();
      inMessage = false;
      if (!connectionDone && !failure) send(frame('A'));
    },
    async close() {
      if (!failure) {
        socket.write(frame('Q'));
        failure = new Error('milter session closed');
        await new Promise<void>((r) => socket.end(r));
      }
      socket.destroy();
    },
  };
}
