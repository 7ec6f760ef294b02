#!/usr/bin/env node
// Thin launcher: the compiled entry point dispatches on argv0 (sendmail, mailq, runq, …).
import('../dist/src/main.js').then((m) => m.main(process.argv)).catch((err) => {
  console.error(`tidemail: ${err?.stack ?? err}`);
  process.exit(70);
});
