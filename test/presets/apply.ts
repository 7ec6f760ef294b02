// Applying a preset the way a user does (`tidemail setup NAME … --root DIR`, a real process) and
// turning the result into a TestSite for startDaemon.

import fs from 'node:fs';
import path from 'node:path';
import { runCli, type CliResult, type TestSite } from '../helpers/daemon.js';
import { freePort } from '../helpers/ports.js';
import { tmpDir, writeFile } from '../helpers/tmp.js';

export interface Applied {
  root: string;
  etc: string;
  configPath: string;
  stateDir: string;
  port: number;
  result: CliResult;
  site: TestSite;
  read(rel: string): string;
}

/** A 0644 file holding a password, as a user would pass to --password-file. */
export function passwordFile(secret: string): string {
  return writeFile(path.join(tmpDir('tidemail-pw-'), 'pw'), `${secret}\n`, 0o600);
}

/** Runs `tidemail setup NAME ARGS --root DIR --listen 127.0.0.1:PORT` (stdin not a terminal). */
export async function applyPreset(name: string, args: string[], opts: { root?: string; listen?: boolean; env?: NodeJS.ProcessEnv } = {}): Promise<Applied> {
  const root = opts.root ?? tmpDir('tidemail-root-');
  const port = await freePort();
  const listen = opts.listen === false ? [] : ['--listen', `127.0.0.1:${port}`];
  const result = await runCli(['setup', name, '--root', root, ...listen, ...args], { env: opts.env });
  const etc = path.join(root, 'etc', 'tidemail');
  const configPath = path.join(etc, 'tidemail.toml');
  const stateDir = path.join(root, 'var', 'lib', 'tidemail');
  return {
    root,
    etc,
    configPath,
    stateDir,
    port,
    result,
    site: { dir: etc, configPath, stateDir, port, route: (n, toml) => void writeFile(path.join(etc, 'routes', `${n}.toml`), toml) },
    read: (rel) => fs.readFileSync(path.join(etc, rel), 'utf8'),
  };
}

/** Fails with the setup's own output when it did not succeed. */
export function assertApplied(a: Applied): Applied {
  if (a.result.code !== 0) throw new Error(`setup exited ${a.result.code}\n${a.result.stdout}\n${a.result.stderr}`);
  return a;
}
