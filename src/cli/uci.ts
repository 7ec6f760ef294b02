// `tidemail uci [--file /etc/config/tidemail] [--out /etc/tidemail]`: on OpenWrt the UCI config
// is the source of truth; this turns it into tidemail.toml and one routes/NAME.toml per route
// section. The init script runs it before every start and reload. Every generated file is
// loaded by the real config loaders first; a bad value is an error at the UCI file's line, and
// then nothing is written (validate() below). Files are rewritten only when
// their content changes (flash wears), and only files this command generated are ever
// replaced or removed: a hand-written tidemail.toml or route is left alone.

import fs from 'node:fs';
import path from 'node:path';
import { ConfigError, UsageError } from '../errors.js';
import { EX } from './exit.js';
import { usageLine } from './usage.js';

const DEFAULT_FILE = '/etc/config/tidemail';
const DEFAULT_OUT = '/etc/tidemail';
/** /var is RAM on OpenWrt: a queue there would not survive a reboot. */
const OPENWRT_STATE_DIR = '/srv/tidemail';
const MARK = '# Generated from';

export interface UciSection {
  type: string;
  name: string | null;
  line: number;
  /** `lines`: for a list, the line of each value. */
  options: Map<string, { value: string | string[]; line: number; lines?: number[] }>;
}

type Kind = 'string' | 'number' | 'bool' | 'list';
/** UCI option → TOML key path(s). Options the init script reads itself have no keys: they are validated only. */
type OptionMap = Record<string, { keys: string[]; kind: Kind } | null>;

const MAIN: OptionMap = {
  enabled: { keys: [], kind: 'bool' },
  // node --max-old-space-size=N in the init script: a word there stops the start later.
  max_heap_mb: { keys: [], kind: 'number' },
  lite_mode: { keys: [], kind: 'bool' },
  hostname: { keys: ['hostname'], kind: 'string' },
  state_dir: { keys: ['state_dir'], kind: 'string' },
  user: { keys: ['user'], kind: 'string' },
  log_level: { keys: ['log.level'], kind: 'string' },
  listen: { keys: ['smtp.listen'], kind: 'list' },
  submission: { keys: ['smtp.submission'], kind: 'list' },
  smtps: { keys: ['smtp.smtps'], kind: 'list' },
  trusted_network: { keys: ['smtp.trusted_networks'], kind: 'list' },
  max_message_size: { keys: ['smtp.max_message_size'], kind: 'string' },
  max_clients: { keys: ['smtp.max_clients'], kind: 'number' },
  tls_cert: { keys: ['smtp.tls_cert'], kind: 'string' },
  tls_key: { keys: ['smtp.tls_key'], kind: 'string' },
  users_file: { keys: ['smtp.users_file'], kind: 'string' },
  local_domain: { keys: ['local.domains'], kind: 'list' },
  aliases: { keys: ['local.aliases'], kind: 'string' },
  delivery: { keys: ['local.delivery'], kind: 'string' },
  maildir: { keys: ['local.maildir'], kind: 'string' },
  mbox: { keys: ['local.mbox'], kind: 'string' },
  lmtp: { keys: ['local.lmtp'], kind: 'string' },
  retry_min: { keys: ['queue.retry_min'], kind: 'string' },
  retry_max: { keys: ['queue.retry_max'], kind: 'string' },
  max_lifetime: { keys: ['queue.max_lifetime'], kind: 'string' },
  no_route_recheck: { keys: ['queue.no_route_recheck'], kind: 'string' },
  queue_minfree: { keys: ['queue.queue_minfree'], kind: 'string' },
  // [relay] (backup MX, a LAN domain) and [alerts]; a relay next_hop needs a hand-written route.
  relay_domain: { keys: ['relay.domains'], kind: 'list' },
  relay_recipients: { keys: ['relay.recipients'], kind: 'string' },
  alert_mail_waiting: { keys: ['alerts.mail_waiting'], kind: 'string' },
  alert_route_failing: { keys: ['alerts.route_failing'], kind: 'string' },
  alert_fetch_failing: { keys: ['alerts.fetch_failing'], kind: 'string' },
  alert_repeat: { keys: ['alerts.repeat'], kind: 'string' },
  alert_command: { keys: ['alerts.command'], kind: 'list' },
  alert_url: { keys: ['alerts.url'], kind: 'string' },
  alert_token_file: { keys: ['alerts.token_file'], kind: 'string' },
};

const ROUTE: OptionMap = {
  enabled: { keys: [], kind: 'bool' },
  kind: { keys: ['kind'], kind: 'string' },
  smarthost: { keys: ['smarthost'], kind: 'string' },
  tls: { keys: ['tls'], kind: 'string' },
  tls_ca_file: { keys: ['tls_ca_file'], kind: 'string' },
  port: { keys: ['port'], kind: 'number' },
  priority: { keys: ['priority'], kind: 'number' },
  auth_user: { keys: ['auth.user'], kind: 'string' },
  password_file: { keys: ['auth.password_file'], kind: 'string' },
  // tls 'none' with a login is refused unless this is 1 (the password would travel in clear).
  allow_plain_auth: { keys: ['allow_plain_auth'], kind: 'bool' },
  interface: { keys: ['online.interface'], kind: 'string' },
  online_file: { keys: ['online.file'], kind: 'string' },
  online_command: { keys: ['online.command'], kind: 'string' },
  online_tcp: { keys: ['online.tcp'], kind: 'string' },
  sender: { keys: ['senders'], kind: 'list' },
  recipient: { keys: ['recipients'], kind: 'list' },
  rewrite_from: { keys: ['rewrite.envelope_from', 'rewrite.header_from'], kind: 'string' },
  schedule: { keys: ['schedule'], kind: 'string' },
  max_connections: { keys: ['max_connections'], kind: 'number' },
  messages_per_connection: { keys: ['messages_per_connection'], kind: 'number' },
};

/** Splits one UCI line into words: '…' and "…" quoting (concatenable), \ escapes outside '…'. */
function words(line: string, where: string): string[] {
  const out: string[] = [];
  let cur: string | null = null;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (c === '#' && cur === null) break;
    if (c === ' ' || c === '\t') {
      if (cur !== null) out.push(cur);
      cur = null;
    } else if (c === "'" || c === '"') {
      const end = line.indexOf(c, i + 1);
      if (end < 0) throw new ConfigError(`${where}: unterminated ${c} quote\n  fix: close the quote`);
      cur = (cur ?? '') + line.slice(i + 1, end).replace(c === '"' ? /\\(.)/g : /(?!)/g, '$1');
      i = end;
    } else if (c === '\\' && i + 1 < line.length) {
      cur = (cur ?? '') + line[++i];
    } else {
      cur = (cur ?? '') + c;
    }
  }
  if (cur !== null) out.push(cur);
  return out;
}

/** Parses the UCI file format (`config TYPE 'name'`, `option K 'v'`, `list K 'v'`). */
export function parseUci(text: string, file: string): UciSection[] {
  const sections: UciSection[] = [];
  text.split('\n').forEach((raw, idx) => {
    const where = `${file}:${idx + 1}`;
    const w = words(raw.trim(), where);
    if (!w.length) return;
    const [keyword, a, b] = w;
    if (keyword === 'package') return;
    if (keyword === 'config') {
      if (!a) throw new ConfigError(`${where}: "config" needs a section type\n  fix: write e.g. config route 'isp'`);
      sections.push({ type: a, name: b ?? null, line: idx + 1, options: new Map() });
      return;
    }
    const s = sections[sections.length - 1];
    if ((keyword === 'option' || keyword === 'list') && !s) throw new ConfigError(`${where}: "${keyword}" before any "config" line\n  fix: start with config tidemail 'main'`);
    if (keyword === 'option' && a && b !== undefined) return void s!.options.set(a, { value: b, line: idx + 1 });
    if (keyword === 'list' && a && b !== undefined) {
      const prev = s!.options.get(a);
      const values = Array.isArray(prev?.value) ? prev.value : prev !== undefined ? [prev.value] : [];
      const lines = prev?.lines ?? (prev ? [prev.line] : []);
      return void s!.options.set(a, { value: [...values, b], line: idx + 1, lines: [...lines, idx + 1] });
    }
    throw new ConfigError(`${where}: cannot read "${raw.trim()}"\n  fix: use config TYPE 'NAME', option KEY 'VALUE' or list KEY 'VALUE'`);
  });
  return sections;
}

type Table = { [k: string]: string | number | boolean | string[] | Table };

function setPath(t: Table, dotted: string, v: Table[string]): void {
  const parts = dotted.split('.');
  let cur = t;
  for (const p of parts.slice(0, -1)) cur = (cur[p] ??= {}) as Table;
  cur[parts[parts.length - 1]!] = v;
}

/** Where each TOML key of a generated file came from: the UCI option and its line. */
interface Origin {
  section: number;
  keys: Map<string, { opt: string; line: number; values?: Map<string, number> }>;
}

function toTable(s: UciSection, map: OptionMap, file: string, origin?: Origin): Table {
  const t: Table = {};
  for (const [opt, { value, line, lines }] of s.options) {
    const where = `${file}:${line}`;
    if (!(opt in map)) {
      const known = Object.keys(map).join(', ');
      throw new ConfigError(`${where}: unknown option "${opt}" in a ${s.type} section\n  fix: use one of ${known}`);
    }
    const m = map[opt];
    if (!m) continue;
    let v: Table[string];
    if (m.kind === 'list') v = Array.isArray(value) ? value : [value];
    else if (Array.isArray(value)) throw new ConfigError(`${where}: "${opt}" takes one value\n  fix: write option ${opt} '…' once, not as a list`);
    else if (m.kind === 'number') {
      if (!/^\d+$/.test(value)) throw new ConfigError(`${where}: "${opt}" must be a whole number, not "${value}"\n  fix: write option ${opt} '10' (digits only)`);
      v = Number(value);
    } else if (m.kind === 'bool') {
      if (!/^(0|1|true|false|yes|no|on|off|enabled|disabled)$/.test(value)) throw new ConfigError(`${where}: "${opt}" must be 1 or 0, not "${value}"\n  fix: write option ${opt} '1' (or '0')`);
      v = ['1', 'true', 'yes', 'on', 'enabled'].includes(value);
    } else v = value;
    for (const k of m.keys) {
      setPath(t, k, v);
      const values = Array.isArray(value) && lines ? new Map(value.map((x, i) => [x, lines[i]!])) : undefined;
      origin?.keys.set(k, { opt, line, ...(values ? { values } : {}) });
    }
  }
  return t;
}

const enabled = (s: UciSection) => !['0', 'false', 'no', 'off', 'disabled'].includes(String(s.options.get('enabled')?.value ?? '1'));

/** The files to write: relative path → TOML text; `origins` gets where each key came from. */
export async function uciToToml(text: string, file: string, origins = new Map<string, Origin>()): Promise<Map<string, string>> {
  const { stringify } = await import('smol-toml');
  const sections = parseUci(text, file);
  const header = `${MARK} ${file} by \`tidemail uci\` (run by /etc/init.d/tidemail).\n# Edit the UCI config (uci set tidemail.…; uci commit tidemail), not this file.\n\n`;
  const mains = sections.filter((s) => s.type === 'tidemail');
  if (mains.length > 1) throw new ConfigError(`${file}:${mains[1]!.line}: a second "config tidemail" section\n  fix: keep one (config tidemail 'main')`);
  const mainOrigin: Origin = { section: mains[0]?.line ?? 1, keys: new Map() };
  origins.set('tidemail.toml', mainOrigin);
  const main: Table = mains[0] ? toTable(mains[0], MAIN, file, mainOrigin) : {};
  main.state_dir ??= OPENWRT_STATE_DIR;
  const out = new Map<string, string>([['tidemail.toml', header + stringify(main)]]);
  let anon = 0;
  for (const s of sections) {
    if (s.type === 'tidemail') continue;
    if (s.type !== 'route') throw new ConfigError(`${file}:${s.line}: unknown section type "${s.type}"\n  fix: use config tidemail 'main' or config route 'NAME'`);
    const name = s.name ?? `route${++anon}`;
    if (!/^[A-Za-z0-9_-]+$/.test(name)) throw new ConfigError(`${file}:${s.line}: route name "${name}" is not a plain word\n  fix: use letters, digits, _ and -`);
    const origin: Origin = { section: s.line, keys: new Map() };
    const t = toTable(s, ROUTE, file, origin);
    if (!enabled(s)) continue;
    out.set(path.join('routes', `${name}.toml`), header + stringify(t));
    origins.set(path.join('routes', `${name}.toml`), origin);
  }
  return out;
}

/**
 * Loads every generated file with the real loaders before anything is written, so a bad value
 * (option tls 'ssl') is reported against the UCI line it came from — not later, in a file whose
 * header says not to edit it. Staged as dot files in the output dirs, so relative paths resolve
 * as they will and a running daemon (which skips dot files) never sees them.
 * @throws ConfigError naming UCI_FILE:LINE and the option, with the loader's problem and fix.
 */
async function validate(files: Map<string, string>, origins: Map<string, Origin>, outDir: string, uciFile: string): Promise<void> {
  const { loadConfig } = await import('../config/load.js');
  const { loadRoute } = await import('../routes/load.js');
  const { lineOfKey } = await import('../config/reader.js');
  fs.mkdirSync(path.join(outDir, 'routes'), { recursive: true });
  for (const [rel, content] of files) {
    const staged = path.join(outDir, path.dirname(rel), `.uci-check-${process.pid}-${path.basename(rel)}`);
    fs.writeFileSync(staged, content, { mode: 0o600 });
    try {
      if (rel === 'tidemail.toml') loadConfig(staged);
      else loadRoute(staged);
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      const origin = origins.get(rel);
      const byLine = new Map<number, { opt: string; line: number; values?: Map<string, number> }>();
      for (const [key, o] of origin?.keys ?? []) {
        const l = lineOfKey(content, key.split('.'));
        if (l !== null) byLine.set(l, o);
      }
      const at = new RegExp(`^${staged.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:(\\d+)(?::\\d+)?: (?:'[^']*' )?(.*)$`, 'gm');
      let message = err.message.replace(at, (_m, l: string, rest: string) => {
        const o = byLine.get(Number(l));
        if (!o) return `${uciFile}:${origin?.section ?? 1}: ${rest}`;
        // A list: the line of the value the loader names ("entry \"lan\" is not …").
        const entry = /^entry "([^"]*)"/.exec(rest)?.[1];
        return `${uciFile}:${(entry !== undefined && o.values?.get(entry)) || o.line}: ${o.values ? 'list' : 'option'} ${o.opt}: ${rest}`;
      });
      // The loader's examples are TOML ("tls = \"starttls\""); say them the UCI way.
      for (const [key, o] of origin?.keys ?? []) {
        const last = key.split('.').pop()!;
        message = message.replace(new RegExp(`(?<![\\w.])(?:[\\w]+\\.)*${last} = "([^"]*)"`, 'g'), (_m, v: string) => `${o.values ? 'list' : 'option'} ${o.opt} '${v}'`);
      }
      throw new ConfigError(message.split(staged).join(`${outDir}/${rel}`), { cause: err });
    } finally {
      fs.rmSync(staged, { force: true });
    }
  }
}

const generated = (p: string) => {
  try {
    return fs.readFileSync(p, 'utf8').startsWith(MARK);
  } catch {
    return false;
  }
};

export async function runUci(argv: string[]): Promise<number> {
  let file = DEFAULT_FILE;
  let outDir = DEFAULT_OUT;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--file' && argv[i + 1]) file = argv[++i]!;
    else if (a === '--out' && argv[i + 1]) outDir = argv[++i]!;
    else throw new UsageError(`uci: unexpected argument "${a}"\n${usageLine('uci')}`);
  }
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}\n  fix: install the default with the package, or create it (config tidemail 'main')`);
  }
  const origins = new Map<string, Origin>();
  const files = await uciToToml(text, file, origins);
  // Said before anything is staged, in words, rather than as an EACCES on a dot file.
  let nearest = outDir;
  while (!fs.existsSync(nearest) && path.dirname(nearest) !== nearest) nearest = path.dirname(nearest);
  try {
    fs.accessSync(nearest, fs.constants.W_OK);
  } catch (err) {
    process.stderr.write(`tidemail: cannot write ${outDir}: ${(err as NodeJS.ErrnoException).code === 'EACCES' ? 'permission denied' : (err as NodeJS.ErrnoException).code}\n  fix: run it as root (/etc/init.d/tidemail does), or pass --out DIR\n`);
    return EX.NOPERM;
  }
  await validate(files, origins, outDir, file);
  fs.mkdirSync(path.join(outDir, 'routes'), { recursive: true });
  for (const [rel, content] of files) {
    const p = path.join(outDir, rel);
    if (fs.existsSync(p) && !generated(p)) {
      process.stderr.write(`tidemail uci: ${p} is hand-written; left alone (delete it to let ${file} manage it)\n`);
      continue;
    }
    if (fs.existsSync(p) && fs.readFileSync(p, 'utf8') === content) continue;
    const tmp = `${p}.tmp`;
    fs.writeFileSync(tmp, content, { mode: 0o644 });
    fs.renameSync(tmp, p);
    process.stdout.write(`wrote ${p}\n`);
  }
  // Routes removed (or disabled) in UCI disappear; hand-written route files stay.
  for (const n of fs.readdirSync(path.join(outDir, 'routes'))) {
    const p = path.join(outDir, 'routes', n);
    if (n.endsWith('.toml') && !files.has(path.join('routes', n)) && generated(p)) {
      fs.unlinkSync(p);
      process.stdout.write(`removed ${p}\n`);
    }
  }
  return EX.OK;
}
