#!/usr/bin/env -S MALLOC_ARENA_MAX=2 node --max-semi-space-size=2
// Thin launcher: the compiled entry point dispatches on argv0 (sendmail, mailq, runq, …).
// The flag keeps V8's young generation small: streaming a 50 MB message otherwise lets the
// nursery grow to tens of MB before it is collected. MALLOC_ARENA_MAX=2: glibc gives each of
// libuv's pool threads (SQLite runs there) its own malloc arena, and the daemon's private memory
// then crept up ~10 MB per 1000 messages; with two arenas it stays flat (issue 17; musl, as on
// OpenWrt, has no arenas). (`env -S` is in coreutils ≥ 8.30; the
// OpenWrt init script passes the flag itself.)
import { statSync } from 'node:fs';

// The bundle (dist/bundle, packaging/bundle.mjs: ~50 files for the daemon instead of ~110
// modules) when it is there, else dist/src as tsc writes it. In a checkout (src/ is there;
// packages do not ship it) a bundle older than dist/src is stale: `npx tsc -p .` ran after it.
const mtime = (p) => statSync(new URL(p, import.meta.url), { throwIfNoEntry: false })?.mtimeMs;
const bundle = mtime('../dist/bundle/main.js');
const stale = bundle !== undefined && mtime('../src/main.ts') !== undefined && bundle < (mtime('../dist/src/main.js') ?? 0);
const entry = bundle !== undefined && !stale ? '../dist/bundle/main.js' : '../dist/src/main.js';
import(entry).then((m) => m.main(process.argv)).catch((err) => {
  console.error(`tidemail: ${err?.stack ?? err}`);
  process.exit(70);
});
