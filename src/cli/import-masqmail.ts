// `tidemail import-masqmail [FILE] [--out DIR | --root DIR] [--force]`: converts a masqmail
// configuration (default /etc/masqmail/masqmail.conf) with its route, online-detection and get
// files into tidemail.toml + routes/ + secrets/, prints what became what and — every one of them —
// what could not be converted, and validates the result like `tidemail config check`.

import fs from 'node:fs';
import path from 'node:path';
import { UsageError } from '../errors.js';
import { convertMasqmail } from '../presets/masqmail.js';
import { abandonStaged, commitConfigDir, finishInterruptedSwitch, stageConfigDir, stagedPath, switchFailure, type Staged } from '../presets/switch.js';
import { makePrivateDir, writePlannedFiles, type Owner } from '../presets/writer.js';
import { isRoot, resolveRunUser } from '../privileges.js';
import { EX } from './exit.js';
import { usageLine } from './usage.js';

const USAGE = usageLine('import-masqmail');

export async function runImportMasqmail(argv: string[]): Promise<number> {
  let file: string | undefined;
  let out: string | undefined;
  let force = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--out' || a === '--root') {
      const v = argv[++i];
      if (!v) throw new UsageError(`${a} needs a directory\n${USAGE}`);
      out = a === '--root' ? path.join(v, 'etc', 'tidemail') : v;
    } else if (a === '--force') force = true;
    else if (a.startsWith('-')) throw new UsageError(`import-masqmail: unknown option ${a}\n${USAGE}`);
    else if (file) throw new UsageError(`import-masqmail: one masqmail.conf at a time\n${USAGE}`);
    else file = a;
  }
  const conf = path.resolve(file ?? '/etc/masqmail/masqmail.conf');
  if (!fs.existsSync(conf)) throw new UsageError(`import-masqmail: ${conf} does not exist\n${USAGE}`);
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
    result = convertMasqmail(conf, outDir);
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
    process.stderr.write('  fix: correct these in the masqmail files, then run import-masqmail again (nothing was written)\n');
    return EX.DATAERR;
  }

  let owner: Owner | null = null;
  if (isRoot()) {
    const u = resolveRunUser('tidemail')!;
    owner = { uid: u.uid, gid: u.gid };
  }
  // Built beside the live dir and switched in whole (presets/switch.ts), like setup.
  let staged: Staged | undefined;
  let backup: string | null;
  try {
    const s = (staged = stageConfigDir(outDir, { dropRoutes: exists }));
    fs.mkdirSync(path.join(s.dir, 'routes'), { recursive: true, mode: 0o755 });
    if (files.some((f) => f.secret)) makePrivateDir(path.join(s.dir, 'secrets'), owner);
    writePlannedFiles(files.map((f) => ({ ...f, path: stagedPath(s, f.path) })), owner);
    backup = commitConfigDir(s, { backup: exists });
  } catch (err) {
    if (staged) abandonStaged(staged);
    const why = switchFailure(err, outDir);
    if (!why) throw err;
    process.stderr.write(`tidemail: ${why}\n`);
    const code = (err as NodeJS.ErrnoException).code;
    return code === 'EACCES' || code === 'EPERM' ? EX.NOPERM : EX.CANTCREAT;
  }
  if (backup) say(`backup: the old configuration is kept in ${backup}`);

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
  // Validate with the code behind `tidemail config check`; a ConfigError names file:line.
  const { runConfig } = await import('./config.js');
  await runConfig(['check', '--config', config]);
  say('next: run `newaliases` if an aliases file is set, replace `masqmail -qo NAME` in your ip-up scripts with `tidemail link up NAME`, flush the masqmail queue (`masqmail -qf`), then start tidemail');
  return EX.OK;
}
