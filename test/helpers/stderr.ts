// Our log lines go to stderr: a test that runs code in-process reads them here.

/** Captures what is written to stderr while `fn` runs (and still writes it through). */
export async function logged<T>(fn: () => Promise<T>): Promise<{ result: T; lines: string }> {
  const write = process.stderr.write.bind(process.stderr);
  let lines = '';
  process.stderr.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
    lines += String(chunk);
    return (write as (...a: unknown[]) => boolean)(chunk, ...rest);
  }) as typeof process.stderr.write;
  try {
    return { result: await fn(), lines };
  } finally {
    process.stderr.write = write;
  }
}
