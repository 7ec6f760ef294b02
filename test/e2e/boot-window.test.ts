// Mail that arrives while the daemon is still starting: the listeners are bound before the queue
// and the delivery runner exist (ports first, then root is dropped, then the queue opens). A client
// that connects the moment the port answers must get a 250 (stored) or a 451 "try again later",
// never an internal error, and every 250 must be in the queue.

import { spawn } from 'node:child_process';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { BIN, makeSite, runCli } from '../helpers/daemon.js';
import { sendMessage } from '../helpers/smtp-client.js';
import { cleanupTmp } from '../helpers/tmp.js';

test.after(() => cleanupTmp());

test('messages sent from the first moment the port answers: 250 or 451 4.3.0, none lost', async () => {
  for (let round = 0; round < 3; round++) {
    const site = await makeSite();
    const proc = spawn(process.execPath, ['--max-semi-space-size=2', BIN, 'daemon', '--config', site.configPath], { env: { MALLOC_ARENA_MAX: '2', ...process.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    proc.stdout!.on('data', (b) => (out += b));
    proc.stderr!.on('data', (b) => (out += b));
    try {
      const replies: string[] = [];
      const deadline = Date.now() + 20_000;
      // Four clients at once, each retrying at once on a refused connection, until the daemon is ready.
      await Promise.all(
        [0, 1, 2, 3].map(async (n) => {
          while (!/daemon ready/.test(out) && Date.now() < deadline) {
            const r = await sendMessage(site.port, 'x@remote.example', [`c${n}@remote.example`], `Subject: boot ${n}\r\n\r\nhi\r\n`).catch((e: Error) => `refused ${e.message}`);
            if (!r.startsWith('refused')) replies.push(r.split('\r\n')[0]!);
          }
        }),
      );
      assert.ok(/daemon ready/.test(out), `daemon did not start:\n${out}`);
      for (const r of replies) assert.match(r, /^(250 |451 4\.3\.0 Local error in processing)/, `reply during start-up: ${r}\n${out}`);
      assert.not.match(out, /Cannot read properties|TypeError/);
      const accepted = replies.filter((r) => r.startsWith('250')).length;
      const q = await runCli(['queue', 'list', '--config', site.configPath]);
      assert.is(q.code, 0, q.stderr);
      assert.is((q.stdout.match(/c\d@remote\.example/g) ?? []).length, accepted, `${accepted} accepted, queue:\n${q.stdout}`);
      process.stderr.write(`[boot-window] round ${round}: ${accepted} accepted, ${replies.length - accepted} told to retry\n`);
    } finally {
      proc.kill('SIGKILL');
    }
  }
});

test.run();
