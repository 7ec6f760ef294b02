// The valid recipients of the relay domains (Postfix's relay_recipient_maps): one entry per line,
// "user@family.example" or "@family.example" for every address of a domain; "#" starts a comment;
// a second column is ignored, so a Postfix map source ("user@domain  OK") works as it is.
// Re-read when the file changes (inode, size, mtime looked at per lookup: one stat), so an edited
// list applies to the next RCPT without a reload. The file is not a secret (mode 0644 is fine).

import fs from 'node:fs';
import { ConfigError } from '../errors.js';

interface Parsed {
  key: string;
  addresses: Set<string>;
  domains: Set<string>;
}

export class RelayRecipients {
  private parsed: Parsed | null = null;

  /** @param where file:line:col of `recipients` in the config, for errors. */
  constructor(readonly file: string, private readonly where: string) {}

  /** Reads the file now: a config error (missing, unreadable, bad line) is reported at load. */
  load(): this {
    this.current();
    return this;
  }

  /** True when the address is listed (or its domain is, as "@domain"). Throws when the file cannot be read. */
  accepts(address: string): boolean {
    const p = this.current();
    const a = address.toLowerCase();
    return p.addresses.has(a) || p.domains.has(a.slice(a.lastIndexOf('@') + 1));
  }

  private current(): Parsed {
    let st: fs.Stats;
    try {
      st = fs.statSync(this.file);
    } catch (err) {
      throw this.unreadable(err as NodeJS.ErrnoException);
    }
    const key = `${st.ino}:${st.size}:${st.mtimeMs}`;
    if (this.parsed?.key === key) return this.parsed;
    let text: string;
    try {
      text = fs.readFileSync(this.file, 'utf8');
    } catch (err) {
      throw this.unreadable(err as NodeJS.ErrnoException);
    }
    const parsed: Parsed = { key, addresses: new Set(), domains: new Set() };
    text.split('\n').forEach((raw, i) => {
      const entry = raw.replace(/#.*$/, '').trim().split(/\s+/)[0] ?? '';
      if (!entry) return;
      const at = entry.lastIndexOf('@');
      if (at < 0 || at === entry.length - 1) {
        throw new ConfigError(`${this.file}:${i + 1}: "${entry.slice(0, 60)}" is not an address or @domain\n  fix: write one entry per line: user@family.example, or @family.example for every address of the domain`);
      }
      if (at === 0) parsed.domains.add(entry.slice(1).toLowerCase());
      else parsed.addresses.add(entry.toLowerCase());
    });
    this.parsed = parsed;
    return parsed;
  }

  private unreadable(e: NodeJS.ErrnoException): ConfigError {
    if (e.code === 'ENOENT') {
      return new ConfigError(`${this.where}: 'relay.recipients' file ${this.file} does not exist\n  fix: create it with one address per line (user@family.example, or @family.example for a whole domain), or remove relay.recipients to accept any address in the relay domains`);
    }
    return new ConfigError(`${this.where}: 'relay.recipients' file ${this.file} cannot be read (${e.code ?? e.message})\n  fix: make it readable by the tidemail user, e.g. chmod 644 ${this.file}`);
  }
}
