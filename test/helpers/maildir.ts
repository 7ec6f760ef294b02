// Reading what a delivery left in a Maildir, for tests that wait for it.

import fs from 'node:fs';
import path from 'node:path';

/** The text of every message in `dir`/new; none while the Maildir does not exist yet. */
export function maildirNew(dir: string): string[] {
  try {
    return fs.readdirSync(path.join(dir, 'new')).map((f) => fs.readFileSync(path.join(dir, 'new', f), 'utf8'));
  } catch {
    return [];
  }
}
