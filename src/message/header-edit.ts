// Changing and deleting header fields in a raw header section (a milter's CHGHEADER), keeping
// every other field byte for byte. Works on latin1 text so 8-bit bytes survive unchanged.

export interface HeaderChange {
  name: string;
  /** 1-based occurrence of `name`, counted from the top of the section. */
  index: number;
  /** New value (folds as CRLF + WSP); '' deletes the field. */
  value: string;
}

/**
 * Applies changes to `section` (CRLF-terminated field lines). A change for an occurrence that
 * does not exist adds the field at the end when it has a value (sendmail's smfi_chgheader), and
 * is ignored when it would delete.
 */
export function applyHeaderChanges(section: string, changes: readonly HeaderChange[]): string {
  // Fields as lists of raw lines; a continuation line belongs to the field above it.
  const fields: string[][] = [];
  for (const line of section.split('\r\n')) {
    if (line === '') continue;
    if ((line.startsWith(' ') || line.startsWith('\t')) && fields.length) fields[fields.length - 1]!.push(line);
    else fields.push([line]);
  }
  const nameOf = (f: string[]) => f[0]!.slice(0, Math.max(0, f[0]!.indexOf(':'))).trim().toLowerCase();
  const render = (name: string, value: string) => {
    const v = value.replace(/\r?\n(?![ \t])/g, '\r\n\t').replace(/\r?\n/g, '\r\n');
    return `${name}:${/^[ \t]/.test(v) ? '' : ' '}${v}`.split('\r\n');
  };
  for (const c of changes) {
    const want = c.name.toLowerCase();
    let seen = 0;
    const at = fields.findIndex((f) => nameOf(f) === want && ++seen === c.index);
    if (at < 0) {
      if (c.value) fields.push(render(c.name, c.value));
    } else if (!c.value) {
      fields.splice(at, 1);
    } else {
      const written = fields[at]![0]!.slice(0, fields[at]![0]!.indexOf(':'));
      fields[at] = render(written, c.value);
    }
  }
  return fields.map((f) => f.join('\r\n') + '\r\n').join('');
}
