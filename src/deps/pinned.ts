// Libraries whose private internals we hook, pinned to the exact version the hooks were written
// against, and checked at startup: a package upgrade that moved a member must stop the daemon
// with a clear message, not silently disable a limit (nodemailer: reply deadlines in
// deliver/smtp-deadline.ts). The SMTP receive path is our own (smtp/wire/) and hooks nothing.

import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { TidemailError } from '../errors.js';

/** Keep in step with package.json (exact versions there too). */
export const PINNED = { nodemailer: '10.6.0' } as const;

export class LibraryMismatchError extends TidemailError {
  override name = 'LibraryMismatchError';
}

const require = createRequire(import.meta.url);

/** The installed version of `lib`, read from its package.json (found above its entry point). */
export function installedVersion(lib: string): string | null {
  try {
    for (let dir = path.dirname(require.resolve(lib)); dir !== path.dirname(dir); dir = path.dirname(dir)) {
      const p = path.join(dir, 'package.json');
      if (!fs.existsSync(p)) continue;
      const pkg = JSON.parse(fs.readFileSync(p, 'utf8')) as { name?: string; version?: string };
      if (pkg.name === lib) return pkg.version ?? null;
    }
  } catch {
    /* not installed: reported below */
  }
  return null;
}

/** @throws LibraryMismatchError when a pinned library is missing or another version. */
export function checkPinnedVersions(): void {
  for (const [lib, want] of Object.entries(PINNED)) {
    const got = installedVersion(lib);
    if (got !== want) {
      throw new LibraryMismatchError(
        `${lib} ${got ?? '(not installed)'} is installed, but this tidemail hooks internals of ${lib} ${want} and was not checked against another version\n  fix: reinstall tidemail's own dependencies (npm ci, or the .deb/.ipk as shipped) so that ${lib}@${want} is used`,
      );
    }
  }
}

/** @throws LibraryMismatchError when `proto` lacks one of the methods a hook replaces or calls. */
export function checkMembers(lib: keyof typeof PINNED, what: string, proto: object, methods: readonly string[]): void {
  const missing = methods.filter((m) => typeof (proto as Record<string, unknown>)[m] !== 'function');
  if (missing.length) {
    throw new LibraryMismatchError(
      `${lib} ${installedVersion(lib) ?? '?'}: ${what} has no ${missing.join(', ')} (hooked by tidemail, written against ${PINNED[lib]})\n  fix: reinstall tidemail's own dependencies so that ${lib}@${PINNED[lib]} is used`,
    );
  }
}
