// `tidemail setup PRESET [flags]` writes a working configuration for one of the presets, and
// `tidemail presets [NAME]` lists them. Flags fill the blanks; what is missing is asked on a
// terminal and is a usage error (64, naming the flag) otherwise. Nothing existing is
// overwritten without --force, and then the old config dir is kept as a timestamped backup.
// The new config is built beside the old one and switched in at the end (presets/switch.ts).
// This file is the command (checks before asking, staging, writing, the switch, the config
// check, what to do next); the flags and the questions are setup-answers.ts.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ConfigError, UsageError } from '../errors.js';
import { SETUP_FLAGS, usageLine } from './usage.js';
import { collect, parseFlags, str, type Collected } from './setup-answers.js';
import { lookupUser } from '../local/users.js';
import { chownTree, isRoot, resolveRunUser } from '../privileges.js';
import { Asker } from '../presets/prompt.js';
import { DKIM_SELECTOR, dkimKeyFile, findPreset, PRESETS, setupPaths, type Answers, type Preset } from '../presets/registry.js';
import { abandonStaged, commitConfigDir, finishInterruptedSwitch, stageConfigDir, stagedPath, switchFailure, type Staged } from '../presets/switch.js';
import { makePrivateDir, writePlannedFiles, type Owner, type PlannedFile } from '../presets/writer.js';
import { compileAliases } from '../local/aliases.js';
import { EX } from './exit.js';

/** The run user's uid/gid when we are root (setup gives it the state dir and secrets). */
function runOwner(runUser: string): { owner: Owner | null; name: string } {
  if (!isRoot()) return { owner: null, name: os.userInfo().username };
  const u = resolveRunUser(runUser)!;
  return { owner: { uid: u.uid, gid: u.gid }, name: u.name };
}

/**
 * Runs `fn` (a subcommand that prints the paths it wrote) with its stdout shown as the paths
 * will be after the switch, not the staging dir's.
 */
async function withLivePaths(staged: Staged, fn: () => Promise<number>): Promise<number> {
  const write = process.stdout.write.bind(process.stdout);
  let text = '';
  process.stdout.write = ((chunk: string | Uint8Array) => {
    text += chunk.toString();
    return true;
  }) as typeof process.stdout.write;
  try {
    return await fn();
  } finally {
    process.stdout.write = write;
    write(text.split(staged.dir).join(staged.live));
  }
}

/** Makes cert.pem + key.pem in the staged tls dir unless both exist; returns the exit code of the generator. */
async function makeSelfSigned(staged: Staged, dir: string, hostname: string, owner: Owner | null, out: (l: string) => void): Promise<number> {
  const at = stagedPath(staged, dir);
  const key = path.join(at, 'key.pem');
  if (fs.existsSync(path.join(at, 'cert.pem')) && fs.existsSync(key)) {
    out(`  kept the certificate in ${dir}`);
    return EX.OK;
  }
  // They may be hard links to the old config's files: openssl writes in place, so unlink first.
  for (const n of ['cert.pem', 'key.pem']) fs.rmSync(path.join(at, n), { force: true });
  const { runTls } = await import('./tls.js');
  const code = await withLivePaths(staged, () => runTls(['selfsigned', '--out', at, '--name', hostname, '--force']));
  if (code !== EX.OK) return code;
  if (owner) fs.chownSync(key, owner.uid, owner.gid); // the daemon rereads it on SIGHUP, after dropping root
  out(`  made a self-signed certificate for ${hostname} in ${dir} (replace it with a real one)`);
  return EX.OK;
}

/** The DKIM key the dkim-sign check needs (kept when it exists: its DNS record may be published). */
async function makeDkimKey(staged: Staged, a: Answers, configPath: string, out: (l: string) => void): Promise<number> {
  const file = stagedPath(staged, dkimKeyFile(a));
  if (fs.existsSync(file)) {
    out(`  kept the DKIM key ${dkimKeyFile(a)}`);
    return EX.OK;
  }
  const { runDkim } = await import('./dkim.js');
  out('  making the DKIM key (setup has already put the config lines it mentions into the config):');
  return withLivePaths(staged, () => runDkim(['keygen', a.domain!, '--selector', DKIM_SELECTOR, '--out', path.dirname(file), '--config', stagedPath(staged, configPath)]));
}

export async function runSetup(argv: string[]): Promise<number> {
  const { positional, flags } = parseFlags(argv);
  const name = positional[0];
  if (!name) throw new UsageError(`${usageLine('setup')}   (presets: ${PRESETS.map((p) => p.name).join(', ')}; \`tidemail presets\` describes them)\n${SETUP_FLAGS}`);
  if (positional.length > 1) throw new UsageError(`setup: unexpected argument "${positional[1]}"`);
  const preset = findPreset(name);
  if (!preset) throw new UsageError(`setup: unknown preset "${name}"; use one of ${PRESETS.map((p) => p.name).join(', ')}`);

  const paths = setupPaths(path.resolve(str(flags, 'root') ?? '/'));
  // A setup killed during its switch left the complete new config beside a missing live one.
  for (const m of finishInterruptedSwitch(paths.etc)) process.stderr.write(`tidemail: ${m}\n`);
  const exists = fs.existsSync(paths.config);
  if (exists && !flags.force) {
    process.stderr.write(`tidemail: ${paths.config} exists; not overwriting it\n  fix: pass --force to replace it (the old ${paths.etc} is kept as ${path.basename(paths.etc)}.backup-TIMESTAMP)\n`);
    return EX.CANTCREAT;
  }

  // Find out before asking anything whether we may write there at all. A --root DIR that does
  // not exist yet is made, like `install -d` (an image being assembled, a fresh mount point).
  if (paths.root !== '/') {
    try {
      fs.mkdirSync(paths.root, { recursive: true, mode: 0o755 });
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      const denied = e.code === 'EACCES' || e.code === 'EPERM' || e.code === 'EROFS';
      process.stderr.write(`tidemail: cannot create --root ${paths.root}: ${e.code ?? e.message}${e.path && e.path !== paths.root ? ` (${e.path})` : ''}\n  fix: ${denied ? 'pick a DIR you may write, or run setup as root' : 'pick a DIR whose parents are directories'}\n`);
      return denied ? EX.NOPERM : EX.CANTCREAT;
    }
  }
  let writable = paths.etc; // the nearest dir that exists below the root
  while (!fs.existsSync(writable) && path.dirname(writable) !== writable) writable = path.dirname(writable);
  try {
    fs.accessSync(writable, fs.constants.W_OK);
  } catch (err) {
    // As root the cause is not privileges (a read-only file system, an immutable dir): say it.
    const why = isRoot() ? ` (${(err as NodeJS.ErrnoException).code}: ${writable} is not writable even for root)` : '';
    const fix = isRoot() ? `make ${writable} writable (read-only mount? chattr -i?), or pass --root DIR to write somewhere else` : `run setup as root (sudo tidemail setup ${preset.name} …), or pass --root DIR to write somewhere else`;
    process.stderr.write(`tidemail: cannot write ${paths.etc}${why}\n  fix: ${fix}\n`);
    return EX.NOPERM;
  }

  const ask = Asker.forStdin(preset.name);
  let collected: Collected;
  try {
    collected = await collect(preset, flags, ask);
  } finally {
    ask.close();
  }
  const { answers, notes } = collected;
  const plan = preset.build(answers);
  const { owner, name: ownerName } = runOwner(answers.runUser);
  const out = (line: string) => process.stdout.write(`${line}\n`);
  out(`tidemail setup ${preset.name}: ${preset.summary}`);
  for (const n of notes) out(`  note: ${n}`);

  // Everything is written into the staged dir; the live one changes only at the switch.
  let staged: Staged | undefined;
  let backup: string | null;
  try {
    staged = stageConfigDir(paths.etc, { dropRoutes: exists });
    const code = await writeStaged(staged, preset, answers, plan.files, owner, out);
    if (code !== EX.OK) {
      abandonStaged(staged);
      return code;
    }
    fs.mkdirSync(path.dirname(paths.state), { recursive: true, mode: 0o755 }); // /var/lib: others must pass through
    fs.mkdirSync(paths.state, { recursive: true, mode: 0o750 });
    if (owner && isRoot()) chownTree(paths.state, lookupUser(owner.uid)!);
    backup = commitConfigDir(staged, { backup: exists });
  } catch (err) {
    if (staged) abandonStaged(staged);
    const why = switchFailure(err, paths.etc);
    if (!why) throw err;
    process.stderr.write(`tidemail: ${why}\n`);
    const code = (err as NodeJS.ErrnoException).code;
    return code === 'EACCES' || code === 'EPERM' ? EX.NOPERM : EX.CANTCREAT;
  }
  for (const f of plan.files) out(`  wrote ${f.path}${f.secret ? ` (mode 0600, owner ${ownerName})` : ''}`);
  if (backup) out(`  backup: the old configuration is kept in ${backup}`);
  out(`  state dir ${paths.state} (owner ${ownerName})`);

  // The same validation as `tidemail config check`: a preset that writes a config the loader
  // refuses is a bug, and the user should hear it now rather than at daemon start.
  const { runConfig } = await import('./config.js');
  let checked: number;
  try {
    checked = await runConfig(['check', '--config', paths.config]);
  } catch (err) {
    // The new config is live already; say how to go back to the old one.
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`tidemail: configuration error: ${err.message}\n`);
    if (backup) process.stderr.write(`  the previous configuration is in ${backup}; to go back: rm -r ${paths.etc} && mv ${backup} ${paths.etc}\n`);
    return EX.CONFIG;
  }
  if (checked !== EX.OK) return checked;

  out('');
  out('next:');
  for (const step of plan.nextSteps) out(`  - ${step}`);
  const rootFlag = paths.root === '/' ? '' : ` --config ${paths.config}`;
  out(`  - start the daemon: systemctl restart tidemail (or: tidemail daemon${rootFlag})`);
  const testTo = answers.admin ?? answers.from ?? answers.localUser ?? 'root';
  out(`  - send a test message: echo "it works" | sendmail${rootFlag ? ` -C ${paths.config}` : ''} ${testTo}; then tidemail check and mailq`);
  return EX.OK;
}

/** The preset's files, certificate, DKIM key and compiled aliases, in the staged config dir. */
async function writeStaged(staged: Staged, preset: Preset, answers: Answers, files: PlannedFile[], owner: Owner | null, out: (l: string) => void): Promise<number> {
  const paths = answers.paths;
  const at = (p: string) => stagedPath(staged, p);
  fs.mkdirSync(at(paths.routes), { recursive: true, mode: 0o755 });
  if (files.some((f) => f.secret && path.dirname(f.path) === paths.secrets)) makePrivateDir(at(paths.secrets), owner);
  // An empty secret is a placeholder (the AUTH users file): one carried over from the old config
  // keeps its content — `--force` must not log every mail client out.
  const kept = files.filter((f) => f.secret && f.content === '' && fs.existsSync(at(f.path)) && fs.statSync(at(f.path)).size > 0);
  writePlannedFiles(files.filter((f) => !kept.includes(f)).map((f) => ({ ...f, path: at(f.path) })), owner);
  for (const f of kept) out(`  kept ${f.path} (it is not empty)`);

  if (preset.needs.tls && answers.tls && answers.tls.cert === path.join(paths.tls, 'cert.pem')) {
    const code = await makeSelfSigned(staged, paths.tls, answers.hostname, owner, out);
    if (code !== EX.OK) return code;
  }
  if (preset.name === 'internet-site') {
    const code = await makeDkimKey(staged, answers, paths.config, out);
    if (code !== EX.OK) return code;
  }
  // newaliases, on the staged text; the table records the live path it will have.
  if (files.some((f) => f.path === paths.aliases)) {
    const { count, warnings } = await compileAliases(at(paths.aliases), paths.aliases);
    for (const w of warnings) out(`  warning: ${w}`);
    out(`  ${paths.aliases}: ${count} aliases`);
  }
  return EX.OK;
}

export async function runPresets(argv: string[]): Promise<number> {
  const name = argv[0];
  if (!name) {
    const width = Math.max(...PRESETS.map((p) => p.name.length));
    for (const p of PRESETS) process.stdout.write(`${p.name.padEnd(width)}  ${p.summary}\n`);
    process.stdout.write('\n`tidemail presets NAME` describes one; `tidemail setup NAME [flags]` applies it.\n');
    return EX.OK;
  }
  const p = findPreset(name);
  if (!p) throw new UsageError(`presets: unknown preset "${name}"; use one of ${PRESETS.map((x) => x.name).join(', ')}`);
  const flagOf: Record<string, string> = { smarthost: '--smarthost', user: '--user', lan: '--lan', domain: '--domain', admin: '--admin', localUser: '--local-user' };
  const needed = Object.entries(flagOf).filter(([k]) => p.needs[k as keyof typeof flagOf & keyof Preset['needs']] === 'required').map(([, f]) => f);
  const optional = Object.entries(flagOf).filter(([k]) => p.needs[k as keyof typeof flagOf & keyof Preset['needs']] === 'optional').map(([, f]) => f);
  if (p.needs.fetch) optional.push('--fetch');
  process.stdout.write(`${p.name}: ${p.summary}\n\n${p.details}\n\nneeds: ${needed.join(' ') || 'nothing'}${optional.length ? `; optional: ${optional.join(' ')}` : ''}\n\n${SETUP_FLAGS}\n`);
  return EX.OK;
}
