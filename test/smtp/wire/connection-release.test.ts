// A closed connection is garbage at once: nothing of the engine (a timer, a listener) keeps its
// socket, session and buffers alive after the socket has closed. At hundreds of connections a
// second, a few seconds of retention each is thousands of sessions promoted to the old heap.

import v8 from 'node:v8';
import vm from 'node:vm';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { SmtpListeners } from '../../../src/smtp/wire/listener.js';
import type { SessionHooks, SessionLimits } from '../../../src/smtp/wire/types.js';
import { freePort, waitFor } from '../../helpers/ports.js';
import { RawSmtp } from '../../helpers/smtp-client.js';

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

test('sessions ended by QUIT are collected right after their sockets close, not 5 s later', async () => {
  const freed = new Set<string>();
  const registry = new FinalizationRegistry<string>((id) => freed.add(id));
  const ids: string[] = [];
  const listeners = new SmtpListeners({ maxClients: 50, maxConnectionsPerIp: 50, isTrusted: () => true });
  // The daemon's command timeout (5 min): closing then waits up to 5 s for the client's FIN.
  const limits: SessionLimits = { name: 'wire.test', maxMessageSize: 1_000_000, commandTimeoutMs: 300_000, maxCommandLength: 512, sessionTimeoutMs: 3_600_000, maxErrors: 0, greetDelayMs: 0 };
  const hooks: SessionHooks = {
    onMailFrom: () => null,
    onRcptTo: () => null,
    onData: async (body) => {
      for await (const _ of body) void _;
      return '2.0.0 Ok';
    },
    onClose: (s) => {
      ids.push(s.id);
      registry.register(s, s.id);
    },
  };
  const port = await freePort();
  await listeners.listen({ host: '127.0.0.1', port, limits, hooks, tls: null, implicitTls: false });
  try {
    for (let i = 0; i < 10; i++) {
      const c = await RawSmtp.connect(port);
      await c.reply();
      assert.match(await c.cmd('QUIT'), /^221/);
      c.close();
    }
    await waitFor('ten sessions closed', () => ids.length === 10 || null, 3000);
    // Well under the 5 s a leftover half-close timer would hold each one.
    await waitFor('ten sessions collected', () => {
      gc();
      return freed.size === 10 || null;
    }, 2500, 100);
  } finally {
    await listeners.close();
  }
});

test.run();
