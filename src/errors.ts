// Error classes. Normal mail outcomes (a 450, an offline route) are values, not exceptions;
// these are for refusals we hand to the SMTP engine and for failures the caller cannot handle.

export class TidemailError extends Error {
  override name = 'TidemailError';
}

/** Refuse an SMTP command. The engine sends `responseCode` and the message to the client. */
export class SmtpError extends TidemailError {
  override name = 'SmtpError';
  readonly responseCode: number;
  readonly enhanced: string;
  constructor(responseCode: number, enhanced: string, message: string, options?: ErrorOptions) {
    // The message goes out verbatim after the code, so the enhanced code leads it.
    super(`${enhanced} ${message}`, options);
    this.responseCode = responseCode;
    this.enhanced = enhanced;
  }
}

/** A configuration problem; the message names file:line and the fix. */
export class ConfigError extends TidemailError {
  override name = 'ConfigError';
}

/** A command-line usage problem (EX_USAGE). */
export class UsageError extends TidemailError {
  override name = 'UsageError';
}

/** Temporary local failure: disk full, database busy (EX_TEMPFAIL / 452). */
export class TempFailError extends TidemailError {
  override name = 'TempFailError';
}

/** True when a low-level error means "the disk is full". */
export function isDiskFull(err: unknown): boolean {
  const e = err as { code?: string; errno?: number; message?: string } | undefined;
  if (!e) return false;
  return e.code === 'ENOSPC' || e.code === 'EDQUOT' || e.code === 'SQLITE_FULL' ||
    /SQLITE_FULL|database or disk is full|ENOSPC/.test(e.message ?? '');
}
