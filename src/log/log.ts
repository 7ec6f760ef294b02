// One line per event, always with the queue id when there is one:
//   2026-11-25T18:40:00.123Z info  3F2A1B2C3D4E5F60: accepted from=<a@b> size=1234 nrcpt=2
// Written to stderr (journald/syslog/procd capture it). Field values with spaces are quoted.

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
const ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

let threshold = ORDER.info;
let withTime = true;

export function setLogLevel(level: LogLevel): void {
  threshold = ORDER[level];
}

/** systemd/procd add their own timestamps; `TIDEMAIL_LOG_TIME=0` drops ours. */
export function setLogTimestamps(on: boolean): void {
  withTime = on;
}

export type Fields = Record<string, string | number | boolean | undefined | null>;

function formatValue(v: string | number | boolean): string {
  const s = String(v);
  return /[\s"=]/.test(s) || s === '' ? JSON.stringify(s) : s;
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
  if (!always && ORDER[level] < threshold) return;
  const time = withTime ? new Date().toISOString() + ' ' : '';
  const line = `${time}${level.padEnd(5)} ${id ? id + ': ' : ''}${msg}${formatFields(fields)}\n`;
  process.stderr.write(line);
}

export const log = {
  debug: (id: string | null, msg: string, fields?: Fields) => write('debug', id, msg, fields),
  info: (id: string | null, msg: string, fields?: Fields) => write('info', id, msg, fields),
  warn: (id: string | null, msg: string, fields?: Fields) => write('warn', id, msg, fields),
  error: (id: string | null, msg: string, fields?: Fields) => write('error', id, msg, fields),
  /** Lifecycle lines (ready, stopped) that supervisors and scripts wait for, at any level. */
  always: (msg: string, fields?: Fields) => write('info', null, msg, fields, true),
};
