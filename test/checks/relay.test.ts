// The relay check (src/checks/relay.ts) against the classic open-relay probes, sent by a real
// client from an untrusted address: inside a network namespace behind a veth pair when we are
// root (the client's address is then really foreign), and from loopback with loopback untrusted
// otherwise. Each probe must be refused at RCPT; the same client's mail for a real local user is
// accepted, so the probes fail because of what they are, not because the client cannot send.

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeSite, runCli, startDaemon, type RunningDaemon } from '../helpers/daemon.js';
import { freePort, waitFor } from '../helpers/ports.js';
import { smarthostRoute, startSmarthost, type Smarthost } from '../helpers/smarthost.js';
import { canUseNetns, createVethNamespace } from '../helpers/netns.js';
import { cleanupTmp, tmpDir, writeFile } from '../helpers/tmp.js';

const canNetns = canUseNetns();

/** Relay attempts, by the name the relay-test lists give them. */
function probes(ourIp: string): [string, string][] {
  return [
    ['plain external', 'victim@victim.example'],
    ['upper case', 'VICTIM@VICTIM.EXAMPLE'],
    ['trailing dot', 'victim@victim.example.'],
    ['percent hack', 'victim%victim.example@tidemail.test'],
    ['percent hack, quoted', '"victim%victim.example"@tidemail.test'],
    ['bang path', 'victim.example!victim@tidemail.test'],
    ['bang path, unqualified', 'victim.example!victim'],
    ['source route', '@tidemail.test:victim@victim.example'],
    ['source route, two hops', '@tidemail.test,@victim.example:victim@victim.example'],
    ['quoted local part with @', '"victim@victim.example"@tidemail.test'],
    ['double @', 'victim@victim.example@tidemail.test'],
    ['our IP literal', `victim@[${ourIp}]`],
    ['loopback IP literal', 'victim@[127.0.0.1]'],
    ['percent hack via IP literal', `victim%victim.example@[${ourIp}]`],
    ['IPv6 literal', 'victim@[IPv6:::1]'],
  ];
}

/** One SMTP session from `source` (python3 smtplib: a client that is not ours). */
const PROBE = `
import json, smtplib, sys
host, port, rcpts = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
s = smtplib.SMTP(host, port, timeout=20)
s.ehlo('probe.example')
out = []
for r in rcpts:
    s.mail('spammer@evil.example')
    out.append(list(s.docmd('RCPT TO:<%s>' % r)))
    s.rset()
s.mail('spammer@evil.example')
code, _ = s.rcpt('me@tidemail.test')
out.append([code, ''])
code, msg = s.data(b'From: <spammer@evil.example>\\r\\nDate: Wed, 25 Nov 2026 10:00:00 +0000\\r\\nSubject: probe\\r\\n\\r\\nhello\\r\\n')
out.append([code, msg.decode()])
s.quit()
print(json.dumps([[c, m if isinstance(m, str) else m.decode()] for c, m in out]))
`;

async function suiteFor(listen: string, clientArgv: (script: string, args: string[]) => string, ourIp: string): Promise<void> {
  const sh: Smarthost = await startSmarthost();
  let d: RunningDaemon | null = null;
  try {
    const port = await freePort();
    const aliases = writeFile(path.join(tmpDir(), 'aliases'), 'me: "|cat >/dev/null"\n');
    const site = await makeSite(`[local]\ndomains = ["tidemail.test"]\naliases = "${aliases}"\n`, { port, smtpToml: 'greet_delay = "0s"' });
    let toml = fs.readFileSync(site.configPath, 'utf8');
    toml = toml.replace(/^listen = .*$/m, `listen = ["${listen}:${port}"]`).replace(/^trusted_networks = .*$/m, 'trusted_networks = ["192.0.2.0/24"]');
    fs.writeFileSync(site.configPath, toml);
    // A catch-all smarthost: anything relayed would be delivered there.
    site.route('isp', smarthostRoute(sh.port));
    d = await startDaemon(site);
    const list = probes(ourIp);
    const out = JSON.parse(clientArgv(PROBE, [listen, String(port), JSON.stringify(list.map(([, a]) => a))])) as [number, string][];
    assert.is(out.length, list.length + 2);
    list.forEach(([name, addr], i) => {
      const [code, text] = out[i]!;
      assert.ok(code >= 500 && code < 600, `${name} <${addr}> was not refused: ${code} ${text}`);
    });
    // The same client may send to a local user: the refusals above were about relaying.
    assert.is(out[list.length]![0], 250, 'local recipient refused');
    assert.is(out[list.length + 1]![0], 250, `local message refused: ${out[list.length + 1]![1]}`);
    // The client ran synchronously: give the daemon's log pipe a moment to be read.
    await waitFor('the relay denial in the log', () => /relay denied.*rcpt=<victim@victim\.example>/.test(d!.logs()), 5000);
    // Nothing is queued for anywhere else, and nothing reached the smarthost.
    const q = await runCli(['mailq', '--config', site.configPath]);
    assert.not.match(q.stdout, /victim/);
    assert.is(sh.messages.length, 0);
  } finally {
    await d?.stop();
    await sh.close();
  }
}

test('open-relay probes from loopback with loopback untrusted are all refused at RCPT', async () => {
  await suiteFor('127.0.0.1', (script, args) => execFileSync('python3', ['-c', script, ...args], { encoding: 'utf8' }), '127.0.0.1');
});

if (canNetns) {
  test('open-relay probes from a foreign address (a network namespace) are all refused at RCPT', async () => {
    const veth = createVethNamespace('r', 78);
    try {
      await suiteFor(veth.hostIp, (script, args) => execFileSync('ip', ['netns', 'exec', veth.ns, 'python3', '-c', script, ...args], { encoding: 'utf8' }), veth.hostIp);
    } finally {
      veth.teardown();
    }
  });
} else {
  test.skip('open-relay probes from a network namespace (needs root and iproute2)', () => undefined);
}

test.after(() => cleanupTmp());
test.run();
