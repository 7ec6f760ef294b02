#!/usr/bin/env -S MALLOC_ARENA_MAX=2 node --max-semi-space-size=2
// Thin launcher: the compiled entry point dispatches on argv0 (sendmail, mailq, runq, …).
// The flag keeps V8's young generation small: streaming a 50 MB message otherwise lets the
// nursery grow to tens of MB before it is collected. MALLOC_ARENA_MAX=2: glibc gives each of
// libuv's pool threads (SQLite runs there) its own malloc arena, and the daemon's private memory
// then crept up ~10 MB per 1000 messages; with two arenas it stays flat (issue 17; musl, as on
// OpenWrt, has no arenas). (`env -S` is in coreutils ≥ 8.30; the
// OpenWrt init script passes the flag itself.)
// CommonJS (bin/package.json): an ES-module entry makes node load its ES module loader, with
// fs/promises and the streams it reads files with, before our first line — ~10 ms and 3 MB of
// every `sendmail` (issue 17). The program itself is still ES modules, imported below.
'use strict';
const { statSync } = require('node:fs');
const { basename, join } = require('node:path');

// The bundle (dist/bundle, packaging/bundle.mjs: ~50 files for the daemon instead of ~110
// modules) when it is there, else dist/src as tsc writes it. In a checkout (src/ is there;
// packages do not ship it) a bundle older than dist/src is stale: `npx tsc -p .` ran after it.
const mtime = (p) => statSync(join(__dirname, p), { throwIfNoEntry: false })?.mtimeMs;
const bundle = mtime('../dist/bundle/main.js');
const stale = bundle !== undefined && mtime('../src/main.ts') !== undefined && bundle < (mtime('../dist/src/main.js') ?? 0);
const useBundle = bundle !== undefined && !stale;
const entry = join(__dirname, useBundle ? '../dist/bundle/main.js' : '../dist/src/main.js');

// `sendmail` submitting a message (what cron runs) is dist/bundle/sendmail.cjs: the submission
// path alone, one file, compiled from V8's code cache (src/sendmail-loader.ts). It answers
// null for anything else, and the whole program runs as for every other command.
function sendmail() {
  const called = basename(process.argv[1] ?? '').replace(/\.js$/, '');
  if (!useBundle || (called !== 'sendmail' && process.argv[2] !== 'sendmail')) return null;
  const { loadSendmailBundle } = require('../dist/bundle/sendmail-loader.cjs');
  return loadSendmailBundle(join(__dirname, '../dist/bundle/sendmail.cjs'))?.sendmailMain(process.argv) ?? null;
}

Promise.resolve()
  .then(sendmail)
  .then((code) => {
    if (code === null) return import(entry).then((m) => m.main(process.argv));
    process.exitCode = code;
    // As main.ts does for every command but the daemon: no lingering on open handles.
    setImmediate(() => process.exit(code));
  })
  .catch((err) => {
    // Not reached by a command's errors (main() reports those): a broken install or a bug.
    // One line for the user (EX_SOFTWARE); the stack trace only with TIDEMAIL_DEBUG set.
    const what = String(err?.message ?? err).replace(/\s*[\r\n]+\s*/g, ' ');
    console.error(process.env.TIDEMAIL_DEBUG ? `tidemail: internal error: ${err?.stack ?? err}`
      : `tidemail: internal error: ${what}\n  this is a bug or a broken install: run again with TIDEMAIL_DEBUG=1 for the details`);
    process.exit(70);
  });
