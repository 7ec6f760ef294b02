// One line per event, always with the queue id when there is one:
//   2026-11-25T18:40:00.123Z info  3F2A1B2C3D4E5F60: accepted from=<a@b> size=1234 nrcpt=2
// Written to stderr (journald/syslog/procd capture it). Field values with spaces are quoted.
// Lines that carry a queue id also go to the event sink (queue/events.ts keeps them in the
// queue database), so `tidemail log ID` still has a message's history after log rotation.

import { printable } from './printable.js';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export const LOG_LEVELS: readonly LogLevel[] = ['debug', 'info', 'warn', 'error'];
const ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

let threshold = ORDER.info;
/** `tidemail daemon --log-level` wins over [log] level, across reloads too. */
let forced: LogLevel | null = null;
// journald and procd stamp each line themselves; TIDEMAIL_LOG_TIME=0 drops ours by hand.
let withTime = process.env.TIDEMAIL_LOG_TIME !== '0' && !process.env.JOURNAL_STREAM;

export function setLogLevel(level: LogLevel): void {
  threshold = ORDER[forced ?? level];
}

/** Pins the level (command line); later setLogLevel calls from the config are ignored. */
export function forceLogLevel(level: LogLevel): void {
  forced = level;
  threshold = ORDER[level];
}

/** systemd/procd add their own timestamps; `TIDEMAIL_LOG_TIME=0` drops ours. */
export function setLogTimestamps(on: boolean): void {
  withTime = on;
}

export type Fields = Record<string, string | number | boolean | undefined | null>;

/** One logged event about a message (or one recipient of it: a 20-digit envelope id). */
export interface LogEvent {
  time: number;
  level: LogLevel;
  id: string;
  event: string;
  /** The key=value text as printed, without the leading space. */
  fields: string;
}

let sink: ((e: LogEvent) => void) | null = null;

/**
 * Receives every event that has a queue id, at info level and above, whatever the log level
 * (the history must not depend on how chatty stderr is). null removes it.
 */
export function setEventSink(fn: ((e: LogEvent) => void) | null): void {
  sink = fn;
}

// Values often carry a remote server's words: control characters are escaped (printable.ts),
// so a reply cannot clear the reader's terminal or forge a log line.
function formatValue(v: string | number | boolean): string {
  const s = String(v);
  // Quoted like JSON (so `"` and `\` read back the same), controls as \xNN like everywhere else.
  return /[\s"=]/.test(s) || s === '' ? `"${printable(s.replace(/["\\]/g, '\\$&'))}"` : printable(s);
}

export function formatFields(fields?: Fields): string {
  if (!fields) return '';
  let out = '';
  for (const [k, v] of Object.entries(fields)) {
    if (v === undefined || v === null) continue;
    out += ` ${k}=${formatValue(v)}`;
  }
  return out;
}

function write(level: LogLevel, id: string | null, msg: string, fields?: Fields, always = false): void {
  const toSink = sink !== null && id !== null && ORDER[level] >= ORDER.info;
  if (!toSink && !always && ORDER[level] < threshold) return;
  // One event, one line: a message text never breaks the line (field values are quoted).
  const text = printable(/[\r\n]/.test(msg) ? msg.replace(/\s*[\r\n]+\s*/g, ' ') : msg);
  const f = formatFields(fields);
  const now = Date.now();
  if (toSink) {
    try {
      sink!({ time: now, level, id: id!, event: text, fields: f.slice(1) });
    } catch {
      /* the history is a convenience; logging itself must never fail */
    }
  }
  if (!always && ORDER[level] < threshold) return;
  const time = withTime ? new Date(now).toISOString() + ' ' : '';
  process.stderr.write(`${time}${level.padEnd(5)} ${id ? id + ': ' : ''}${text}${f}\n`);
}

export const log = {
  debug: (id: string | null, msg: string, fields?: Fields) => write('debug', id, msg, fields),
  info: (id: string | null, msg: string, fields?: Fields) => write('info', id, msg, fields),
  warn: (id: string | null, msg: string, fields?: Fields) => write('warn', id, msg, fields),
  error: (id: string | null, msg: string, fields?: Fields) => write('error', id, msg, fields),
  /** Lifecycle lines (ready, stopped) that supervisors and scripts wait for, at any level. */
  always: (msg: string, fields?: Fields) => write('info', null, msg, fields, true),
};
