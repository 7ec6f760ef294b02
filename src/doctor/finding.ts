// What a doctor probe reports: one line per finding, OK / WARN / FAIL (or SKIP when a probe was
// not run, e.g. a route that is offline), always with the fix when it is not OK.

export type Level = 'ok' | 'warn' | 'fail' | 'skip';

export interface Finding {
  /** Which probe: config, state, ports, certificate, route NAME, dns DOMAIN, … */
  area: string;
  level: Level;
  /** What was found, in one line. */
  message: string;
  /** What to do about it (for warn/fail). */
  fix?: string;
}

export const ok = (area: string, message: string): Finding => ({ area, level: 'ok', message });
export const warn = (area: string, message: string, fix: string): Finding => ({ area, level: 'warn', message, fix });
export const fail = (area: string, message: string, fix: string): Finding => ({ area, level: 'fail', message, fix });
export const skip = (area: string, message: string): Finding => ({ area, level: 'skip', message });

const LABEL: Record<Level, string> = { ok: 'OK  ', warn: 'WARN', fail: 'FAIL', skip: 'SKIP' };

export function formatFinding(f: Finding): string {
  const head = `${LABEL[f.level]}  ${f.area.padEnd(16)} ${f.message}`;
  return f.fix && f.level !== 'ok' ? `${head}\n${' '.repeat(23)}fix: ${f.fix}` : head;
}

/** Runs a probe; a probe that throws is a FAIL of its area, never a crash of `check`. */
export async function guarded(area: string, probe: () => Promise<Finding[]> | Finding[]): Promise<Finding[]> {
  try {
    return await probe();
  } catch (err) {
    // Not a bug: this user may not look there (a state dir of 0700 checked as another user).
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EACCES' || code === 'EPERM') return [skip(area, `cannot look as this user (${(err as Error).message}); run check as root or as the daemon's user to verify it`)];
    return [fail(area, `probe failed: ${(err as Error).message}`, 'run it again; if it persists, report it with this message')];
  }
}
