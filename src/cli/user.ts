// `tidemail user add|passwd|remove|list [NAME]`: manages the SMTP AUTH users file. The
// password comes from stdin — typed without echo on a terminal, one line when piped — and is
// stored only as an scrypt hash; nothing secret is ever printed.

import { loadConfig } from '../config/load.js';
import { UsageError } from '../errors.js';
import { hashPassword } from '../local/passwords.js';
import { resolveRunUser } from '../privileges.js';
import { isValidUserName, readUsers, writeUsers } from '../smtp/users-file.js';
import { takeConfigOption } from './context.js';
import { EX } from './exit.js';
import { usageLine } from './usage.js';

const USAGE = `${usageLine('user')} (the password is read from stdin)`;

export async function runUser(argv: string[]): Promise<number> {
  const args = [...argv];
  const config = loadConfig(takeConfigOption(args));
  const [verb, name] = args;
  const file = config.smtp.usersFile;
  if (!file) throw new UsageError('no config file, so no users file: create /etc/tidemail/tidemail.toml (or pass --config FILE) first');
  const users = readUsers(file, config.smtp.usersFileWhere);
  if (verb === 'list' && !name) {
    for (const u of [...users.keys()].sort()) process.stdout.write(`${u}\n`);
    return EX.OK;
  }
  if (!name || !['add', 'passwd', 'remove'].includes(verb ?? '')) throw new UsageError(USAGE);
  if (!isValidUserName(name)) throw new UsageError(`"${name}" is not a valid user name (letters, digits and . _ @ + -, at most 64)`);
  const exists = users.has(name);
  if (verb === 'add' && exists) {
    process.stderr.write(`tidemail: user "${name}" already exists; use \`tidemail user passwd ${name}\`\n`);
    return EX.DATAERR;
  }
  if (verb !== 'add' && !exists) {
    process.stderr.write(`tidemail: no user "${name}" in ${file}\n`);
    return EX.NOUSER;
  }
  if (verb === 'remove') {
    users.delete(name);
  } else {
    const password = await readPassword();
    if (!password) {
      process.stderr.write('tidemail: empty password; nothing changed\n');
      return EX.DATAERR;
    }
    users.set(name, await hashPassword(password));
  }
  // The daemon re-reads the file after dropping root, so it must own it.
  const owner = resolveRunUser(config.user);
  writeUsers(file, users, owner ?? undefined);
  process.stderr.write(`tidemail: user "${name}" ${verb === 'add' ? 'added' : verb === 'remove' ? 'removed' : 'password changed'} (${file})\n`);
  return EX.OK;
}

/** One line from stdin; on a terminal, asked twice without echo. */
async function readPassword(): Promise<string> {
  if (!process.stdin.isTTY) return (await readLine()) ?? '';
  const first = await promptHidden('Password: ');
  const again = await promptHidden('Again: ');
  if (first !== again) throw new UsageError('the passwords differ; nothing changed');
  return first;
}

async function readLine(): Promise<string | null> {
  let text = '';
  for await (const chunk of process.stdin) {
    text += String(chunk);
    const nl = text.indexOf('\n');
    if (nl !== -1) return text.slice(0, nl).replace(/\r$/, '');
  }
  return text || null;
}

function promptHidden(prompt: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const stdin = process.stdin;
    process.stderr.write(prompt);
    stdin.setRawMode(true);
    stdin.setEncoding('utf8');
    stdin.resume();
    let text = '';
    const done = (err?: Error) => {
      stdin.setRawMode(false);
      stdin.pause();
      stdin.off('data', onData);
      process.stderr.write('\n');
      if (err) reject(err);
      else resolve(text);
    };
    const onData = (d: string) => {
      for (const ch of d) {
        if (ch === '\r' || ch === '\n') return done();
        if (ch === '\u0003') return done(new UsageError('interrupted; nothing changed'));
        if (ch === '\u007f' || ch === '\b') text = text.slice(0, -1);
        else text += ch;
      }
    };
    stdin.on('data', onData);
  });
}
