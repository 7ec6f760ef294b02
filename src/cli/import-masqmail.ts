// `tidemail import-masqmail [FILE] [--out DIR | --root DIR] [--force]`: converts a masqmail
// configuration (default /etc/masqmail/masqmail.conf) with its route, online-detection and get
// files into tidemail.toml + routes/ + secrets/, prints what became what and — every one of them —
// what could not be converted, and validates the result like `tidemail config check`.
// --root DIR is a system image: every file is read from under DIR (DIR/etc/masqmail/…, and the
// route and get files masqmail.conf names), the result goes to DIR/etc/tidemail. A file that
// cannot be read stops the import (66) with nothing written; a result that fails its own check
// is taken back (the previous config, if any, is put back) and the import exits 78.

import fs from 'node:fs';
import path from 'node:path';
import { ConfigError, UsageError } from '../errors.js';
import { convertMasqmail } from '../presets/masqmail.js';
import { withInputRoot } from '../presets/masqmail-parse.js';
import { abandonStaged, commitConfigDir, finishInterruptedSwitch, stageConfigDir, stagedPath, switchFailure, type Staged } from '../presets/switch.js';
import { makePrivateDir, writePlannedFiles, type Owner } from '../presets/writer.js';
import { isRoot, resolveRunUser } from '../privileges.js';
import { EX } from './exit.js';
import { usageLine } from './usage.js';

const USAGE = usageLine('import-masqmail');

export async function runImportMasqmail(argv: string[]): Promise<number> {
  let file: string | undefined;
  let out: string | undefined;
  let root = '/';
  let force = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--out' || a === '--root') {
      const v = argv[++i];
      if (!v) throw new UsageError(`${a} needs a directory\n${USAGE}`);
      if (a === '--root') root = path.resolve(v);
      out = a === '--root' ? path.join(v, 'etc', 'tidemail') : v;
    } else if (a === '--force') force = true;
    else if (a.startsWith('-')) throw new UsageError(`import-masqmail: unknown option ${a}\n${USAGE}`);
    else if (file) throw new UsageError(`import-masqmail: one masqmail.conf at a time\n${USAGE}`);
    else file = a;
  }
  const conf = path.resolve(file ?? path.join(root, 'etc/masqmail/masqmail.conf'));
  if (!fs.existsSync(conf)) {
    process.stderr.write(`tidemail: import-masqmail: ${conf} does not exist\n  fix: name the masqmail.conf to convert${root === '/' ? ', or pass --root DIR for a system image under DIR' : ''}\n${USAGE}\n`);
    return EX.NOINPUT;
  }
  const outDir = path.resolve(out ?? '/etc/tidemail');
  const config = path.join(outDir, 'tidemail.toml');
  for (const m of finishInterruptedSwitch(outDir)) process.stderr.write(`tidemail: ${m}\n`);
  const exists = fs.existsSync(config);
  if (exists && !force) {
    process.stderr.write(`tidemail: ${config} exists; not overwriting it\n  fix: pass --force to replace it (the old ${outDir} is kept as ${path.basename(outDir)}.backup-TIMESTAMP), or --out DIR to write elsewhere\n`);
    return EX.CANTCREAT;
  }

  let result;
  try {
    result = withInputRoot(root, () => convertMasqmail(conf, outDir));
  } catch (err) {
    process.stderr.write(`tidemail: cannot read the masqmail configuration: ${(err as Error).message}\n`);
    return EX.DATAERR;
  }
  const { files, report } = result;
  const say = (l: string) => process.stdout.write(`${l}\n`);
  // Errors stop the import before anything is written: a half-converted config that says
  // "every setting was converted" would be worse than none.
  if (report.errors.length) {
    const shown = report.errors.slice(0, 20);
    process.stderr.write(`tidemail: ${conf} was not converted: ${report.errors.length} error(s)\n${shown.map((e) => `  ${e}\n`).join('')}`);
    if (report.errors.length > shown.length) process.stderr.write(`  … and ${report.errors.length - shown.length} more\n`);
    process.stderr.write(`  fix: correct these in the masqmail files${root !== '/' ? ` (read under --root ${root})` : ''}, then run import-masqmail again (nothing was written)\n`);
    // A referenced file that is not there is missing input (sysexits EX_NOINPUT), not bad data.
    return report.errors.some((e) => /cannot read it \(/.test(e)) ? EX.NOINPUT : EX.DATAERR;
  }

  let owner: Owner | null = null;
  if (isRoot()) {
    const u = resolveRunUser('tidemail')!;
    owner = { uid: u.uid, gid: u.gid };
  }
  // Built beside the live dir and switched in whole (presets/switch.ts), like setup.
  let staged: Staged | undefined;
  let backup: string | null;
  // Whatever was there is kept aside until the new config has passed its check (see below).
  const dirExisted = fs.existsSync(outDir);
  try {
    const s = (staged = stageConfigDir(outDir, { dropRoutes: exists }));
    fs.mkdirSync(path.join(s.dir, 'routes'), { recursive: true, mode: 0o755 });
    if (files.some((f) => f.secret)) makePrivateDir(path.join(s.dir, 'secrets'), owner);
    writePlannedFiles(files.map((f) => ({ ...f, path: stagedPath(s, f.path) })), owner);
    backup = commitConfigDir(s, { backup: dirExisted });
  } catch (err) {
    if (staged) abandonStaged(staged);
    const why = switchFailure(err, outDir);
    if (!why) throw err;
    process.stderr.write(`tidemail: ${why}\n`);
    const code = (err as NodeJS.ErrnoException).code;
    return code === 'EACCES' || code === 'EPERM' ? EX.NOPERM : EX.CANTCREAT;
  }
  // Validate with the code behind `tidemail config check` before saying anything was done; a
  // result that fails it is taken back, so no config is left that tidemail would refuse.
  const { runConfig } = await import('./config.js');
  try {
    await runConfig(['check', '--config', config]);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    const failed = `${outDir}.failed-${process.pid}`;
    fs.renameSync(outDir, failed);
    if (backup) fs.renameSync(backup, outDir);
    fs.rmSync(failed, { recursive: true, force: true });
    process.stderr.write(`tidemail: the converted configuration fails its own check:\n  ${err.message.split('\n').join('\n  ')}\n`);
    process.stderr.write(`  nothing was kept: ${backup ? `${outDir} is as it was before` : `${outDir} was removed again`}\n  fix: correct the masqmail setting it came from (see the "Converted from" line of that file), then run import-masqmail again\n`);
    return EX.CONFIG;
  }
  if (backup && !exists) fs.rmSync(backup, { recursive: true, force: true }); // it held no config: everything in it is linked into the new dir
  else if (backup) say(`backup: the old configuration is kept in ${backup}`);

  say(`converted ${conf}:`);
  for (const f of files) say(`  wrote ${f.path}${f.secret ? ' (mode 0600)' : ''}`);
  say('');
  for (const c of report.converted) say(`  ${c.at} ${c.key} → ${c.to}`);
  if (report.notes.length) {
    say('');
    say('check these:');
    for (const n of report.notes) say(`  - ${n}`);
  }
  say('');
  if (report.notConverted.length) {
    say(`NOT converted (${report.notConverted.length}; also left as comments in the files above):`);
    for (const n of report.notConverted) say(`  ${n.at} ${n.key}${n.value === null ? '' : ` = ${JSON.stringify(n.value)}`}: ${n.reason}`);
  } else {
    say('every setting was converted.');
  }
  say('');
  say('next: run `newaliases` if an aliases file is set, replace `masqmail -qo NAME` in your ip-up scripts with `tidemail link up NAME`, flush the masqmail queue (`masqmail -qf`), then start tidemail');
  return EX.OK;
}
