// Address lists from header fields (From, To, Cc, Reply-To), with the forms local programs
// really write: addressparser takes a bare "root" for a display name, and drops the comment in
// "root (Cron Daemon)"; both are an address (a local part) here, the comment its name.

import addressparser from 'nodemailer/lib/addressparser/index.js';

export interface ListedAddress {
  name: string;
  address: string;
}

const BARE_LOCAL_PART = /^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.]+$/;

/** Flattens groups; null entries mark syntax we do not understand (leave such fields alone). */
export function parseAddressList(value: string): (ListedAddress | null)[] {
  const out: (ListedAddress | null)[] = [];
  const parts = addressparser(value);
  const walk = (list: typeof parts) => {
    for (const a of list) {
      if ('group' in a && a.group) walk(a.group);
      else if ('address' in a && a.address) out.push({ name: a.name ?? '', address: a.address });
      else if (a.name && BARE_LOCAL_PART.test(a.name)) out.push({ name: '', address: a.name });
      else out.push(null);
    }
  };
  walk(parts);
  // "root (Cron Daemon)": one bare address with a comment → the comment is the name.
  const comment = /^\s*[^\s(<>@,]+\s*\(([^()]*)\)\s*$/.exec(value);
  if (out.length === 1 && out[0] && !out[0].name && comment) out[0].name = comment[1]!.trim();
  return out;
}
