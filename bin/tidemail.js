#!/usr/bin/env -S node --max-semi-space-size=2
// Thin launcher: the compiled entry point dispatches on argv0 (sendmail, mailq, runq, …).
// The flag keeps V8's young generation small: streaming a 50 MB message otherwise lets the
// nursery grow to tens of MB before it is collected. (`env -S` is in coreutils ≥ 8.30; the
// OpenWrt init script passes the flag itself.)
import('../dist/src/main.js').then((m) => m.main(process.argv)).catch((err) => {
  console.error(`tidemail: ${err?.stack ?? err}`);
  process.exit(70);
});
