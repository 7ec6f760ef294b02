// The SMTP front under test: a daemon with chosen [smtp] settings (and optionally a recording
// smarthost), raw sessions, and what the queue holds afterwards. Shared by the test files of
// src/smtp/ and src/checks/ that talk SMTP to the real daemon.

import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { Test } from 'uvu';
import * as assert from 'uvu/assert';
import { Db } from '../../src/queue/db.js';
import { makeSite, runCli, startDaemon, type RunningDaemon, type TestSite } from './daemon.js';
import { freePort, waitFor } from './ports.js';
import { smarthostRoute, startSmarthost, type Smarthost } from './smarthost.js';
import { RawSmtp } from './smtp-client.js';
import { cleanupTmp } from './tmp.js';

/** A message with the header fields RFC 5322 requires (the syntax check wants From and Date). */
export const GOOD = 'From: <a@tidemail.test>\r\nDate: Wed, 25 Nov 2026 10:00:00 +0000\r\nSubject: good\r\n\r\nthis one is fine\r\n';

export const ipv6Loopback = await new Promise<boolean>((resolve) => {
  const s = net.createServer();
  s.once('error', () => resolve(false));
  s.listen(0, '::1', () => s.close(() => resolve(true)));
});

export interface SmtpFrontUnderTest {
  site: TestSite;
  d: RunningDaemon;
  sh: Smarthost | null;
  /** The IPv6 listener's port when `ipv6` was asked for. */
  port6: number;
}


/** Helpers bound to one uvu suite: everything they start is stopped after each test. */
export function frontHelpers(test: Test) {
  // Clients first: the daemon waits for open sessions.
  const clients: RawSmtp[] = [];
  const running: { stop(): Promise<unknown> }[] = [];
  test.after.each(async () => {
    for (const c of clients.splice(0)) c.close();
    for (const r of running.splice(0).reverse()) await r.stop();
  });
  test.after(() => cleanupTmp());

  /**
   * A daemon with the given [smtp] settings. `trusted` replaces makeSite's trusted_networks
   * (which trust loopback); `smarthost` adds a route to a recording smarthost.
   */
  async function front(opts: { trusted?: string[]; smtpToml?: string; extraToml?: string; ipv6?: boolean; smarthost?: boolean } = {}): Promise<SmtpFrontUnderTest> {
    const site = await makeSite(opts.extraToml ?? '', { smtpToml: opts.smtpToml });
    let toml = fs.readFileSync(site.configPath, 'utf8');
    const edit = (re: RegExp, line: string) => {
      assert.match(toml, re, 'makeSite no longer writes the line this test rewrites');
      toml = toml.replace(re, line);
    };
    let port6 = 0;
    if (opts.ipv6) {
      port6 = await freePort('::1');
      edit(/^listen = .*$/m, `listen = ["127.0.0.1:${site.port}", "[::1]:${port6}"]`);
    }
    if (opts.trusted) edit(/^trusted_networks = .*$/m, `trusted_networks = ${JSON.stringify(opts.trusted)}`);
    fs.writeFileSync(site.configPath, toml);
    let sh: Smarthost | null = null;
    if (opts.smarthost) {
      const s = await startSmarthost();
      running.push({ stop: () => s.close() });
      site.route('isp', smarthostRoute(s.port));
      sh = s;
    }
    const d = await startDaemon(site);
    running.push(d);
    return { site, d, sh, port6 };
  }

  async function connect(port: number, host = '127.0.0.1', localAddress?: string): Promise<RawSmtp> {
    const c = await RawSmtp.connect(port, host, localAddress);
    clients.push(c);
    return c;
  }

  /** Greeting + EHLO on a fresh session. */
  async function session(port: number, host = '127.0.0.1', localAddress?: string): Promise<RawSmtp> {
    const c = await connect(port, host, localAddress);
    const ehlo = await c.hello();
    assert.match(ehlo, /^250[ -]/);
    return c;
  }

  /** MAIL, RCPTs, DATA, body, final dot on an open session; returns the reply to the final dot. */
  async function transaction(c: RawSmtp, from: string, to: string[], body: string | Buffer, mailParams = ''): Promise<string> {
    assert.match(await c.cmd(`MAIL FROM:<${from}>${mailParams}`), /^250 /);
    for (const r of to) assert.match(await c.cmd(`RCPT TO:<${r}>`), /^250 /, `RCPT TO:<${r}>`);
    assert.match(await c.cmd('DATA'), /^354 /);
    c.write(body);
    c.write('.\r\n');
    return c.reply(30_000);
  }

  /** No reply is waiting and none arrives: the client and server agree where the session is. */
  async function assertInSync(c: RawSmtp): Promise<void> {
    let extra = '';
    try {
      extra = await c.reply(300);
    } catch {
      // "no reply within 300 ms" is what we want
    }
    assert.is(extra, '', `unexpected extra reply: ${JSON.stringify(extra)}`);
    assert.match(await c.cmd('NOOP'), /^250 /);
  }

  /**
   * One enhanced status code after the basic code, never two (wire/reply-writer.ts adds the generic one only to a text without its own).
   * 3xx replies carry none (RFC 2034 §3).
   */
  function assertOneEnhancedCode(reply: string): void {
    for (const line of reply.split('\n')) {
      if (line.startsWith('3')) continue;
      assert.match(line, /^\d{3}[ -]\d\.\d{1,3}\.\d{1,3} /, `no enhanced code in ${JSON.stringify(line)}`);
      assert.not.match(line, /^\d{3}[ -]\d\.\d{1,3}\.\d{1,3} \d\.\d{1,3}\.\d{1,3} /, `doubled enhanced code in ${JSON.stringify(line)}`);
    }
  }

  interface QueueRows {
    messages: number;
    recipients: number;
    chunks: number;
  }

  /** Row counts straight from the queue database (read-only, alongside the running daemon). */
  async function queueRows(site: TestSite): Promise<QueueRows> {
    const db = await Db.open(path.join(site.stateDir, 'queue.sqlite'), true);
    try {
      const count = async (table: string) => (await db.get<{ n: number }>(`SELECT count(*) AS n FROM ${table}`))!.n;
      return { messages: await count('messages'), recipients: await count('recipients'), chunks: await count('chunks') };
    } finally {
      await db.close();
    }
  }

  async function assertQueueEmpty(site: TestSite, what: string): Promise<void> {
    assert.equal(await queueRows(site), { messages: 0, recipients: 0, chunks: 0 }, `queue rows left after ${what}`);
  }

  async function assertMailqEmpty(site: TestSite): Promise<void> {
    const q = await runCli(['mailq', '--config', site.configPath]);
    assert.is(q.code, 0, q.stderr);
    assert.match(q.stdout, /Mail queue is empty/);
  }

  /** Waits until the smarthost has `n` messages and the queue has drained, then checks it got no more. */
  async function assertDeliveredExactly(f: SmtpFrontUnderTest, n: number): Promise<void> {
    const sh = f.sh!;
    await sh.waitForMessages(n);
    await waitFor('the queue to drain', async () => {
      const r = await queueRows(f.site);
      return r.messages === 0 && r.chunks === 0;
    });
    assert.is(sh.messages.length, n, `smarthost got ${sh.messages.length} messages: ${sh.messages.map((m) => JSON.stringify(m.raw.toString().slice(-80))).join(', ')}`);
  }

  const GOOD = 'From: <a@tidemail.test>\r\nDate: Wed, 25 Nov 2026 10:00:00 +0000\r\nSubject: good\r\n\r\nthis one is fine\r\n';

  return { front, connect, session, transaction, assertInSync, assertOneEnhancedCode, queueRows, assertQueueEmpty, assertMailqEmpty, assertDeliveredExactly, GOOD, running, clients };
}
