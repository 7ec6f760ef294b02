// `tidemail import-masqmail` on sample masqmail configurations written after masqmail.conf(5),
// masqmail.route(5) and masqmail.get(5) (test/fixtures/masqmail): the result passes
// `config check` and loads with the real route loader into what masqmail meant; every key of
// every file is reported, converted or not — none is dropped silently.

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { loadConfig } from '../../src/config/load.js';
import { loadRoutes } from '../../src/routes/load.js';
import type { PipeRoute, SmarthostRoute } from '../../src/routes/profile.js';
import { REPO, runCli } from '../helpers/daemon.js';
import { cleanupTmp, tmpDir } from '../helpers/tmp.js';

test.after(() => cleanupTmp());

const FIXTURES = path.join(REPO, 'test', 'fixtures', 'masqmail');

/** Copies the sample masqmail config to a temp dir, pointing its /etc/masqmail paths there. */
function sampleConfig(): string {
  const dir = tmpDir('tidemail-masqmail-');
  for (const name of fs.readdirSync(FIXTURES)) {
    fs.writeFileSync(path.join(dir, name), fs.readFileSync(path.join(FIXTURES, name), 'utf8').split('/etc/masqmail').join(dir));
  }
  return dir;
}

async function importSample(conf = 'masqmail.conf', extra: string[] = []) {
  const m = sampleConfig();
  const out = path.join(tmpDir(), 'tidemail');
  const r = await runCli(['import-masqmail', path.join(m, conf), '--out', out, ...extra]);
  return { m, out, r };
}

/** "file:line key" for every setting in a masqmail file. */
function keysOf(file: string): string[] {
  return fs.readFileSync(file, 'utf8').split('\n').flatMap((l, i) => {
    const k = /^([a-z_.0-9]+)\s*=/.exec(l);
    return k ? [`${path.basename(file)}:${i + 1} ${k[1]}`] : [];
  });
}

test('the sample masqmail 0.2 config converts into a config that `config check` accepts', async () => {
  const { out, r } = await importSample();
  assert.equal(r.code, 0, r.stderr + r.stdout);
  assert.match(r.stdout, /tidemail\.toml: ok \(4 route\(s\)\)/);
  const check = await runCli(['config', 'check', '--config', path.join(out, 'tidemail.toml')]);
  assert.equal(check.code, 0, check.stderr);
});

test('every key of every masqmail file is reported, converted or not; unknown keys are listed as not converted', async () => {
  const { m, r } = await importSample();
  const [converted, notConverted] = r.stdout.split(/^NOT converted/m);
  for (const name of ['masqmail.conf', 'isp.route', 'work.route', 'uucp.route', 'isp.get', 'work.get']) {
    for (const key of keysOf(path.join(m, name))) assert.ok(r.stdout.includes(`${key} `), `${key} is not in the report`);
  }
  // An unknown key's value is never shown (it may be a password under a name we cannot guess).
  assert.match(notConverted!, /masqmail\.conf:35 frobnicate_headers \(value not shown\): not a setting of masqmail\.conf\(5\)/);
  assert.match(notConverted!, /isp\.route:10 set_h_from_domain = "isp\.example": .*rewrite\.map\.USER = "USER@isp\.example"/);
  assert.match(notConverted!, /isp\.route:8 not_allowed_return_paths = "<>": tidemail routes cannot match the null sender/);
  assert.match(notConverted!, /masqmail\.conf:17 maildir_users/);
  assert.match(converted!, /isp\.route:11 map_h_from_addresses → rewrite\.map/);
});

test('the converted routes mean what masqmail meant', async () => {
  const { out } = await importSample();
  const config = loadConfig(path.join(out, 'tidemail.toml'));
  assert.equal(config.hostname, 'pc.home.arpa');
  assert.equal(config.local.domains, ['localhost', 'pc', 'pc.home.arpa']);
  assert.equal(config.smtp.listen, [{ host: '127.0.0.1', port: 25 }, { host: '192.168.1.2', port: 25 }]);
  assert.equal(config.local.mda, ['/usr/bin/procmail', '-Y', '-d', '{user}']);
  assert.equal(config.queue.maxLifetimeMs, 4 * 86_400_000);
  assert.equal(config.local.archive, 'archive@pc.home.arpa');

  const routes = Object.fromEntries(loadRoutes(out).map((r) => [r.name, r]));
  assert.equal(Object.keys(routes).sort(), ['isp', 'local-net', 'work-1', 'work-2']);
  const isp = routes.isp as SmarthostRoute;
  assert.equal([isp.host, isp.port, isp.tls], ['mail.isp.example', 25, 'starttls']);
  assert.equal(isp.auth?.kind === 'password' && [isp.auth.user, isp.auth.password], ['meillo', 'secret with spaces']);
  assert.equal(fs.statSync(path.join(out, 'secrets', 'isp')).mode & 0o777, 0o600);
  assert.equal(isp.senders, ['meillo', 'root', 'cron']);
  assert.equal(isp.notSenders, ['spam@*']);
  assert.equal(isp.notRecipients, ['home.arpa', '*.intranet.example']);
  assert.equal(isp.rewrite, { envelopeFrom: 'postmaster@isp.example', headerFrom: undefined, map: { meillo: 'meillo@isp.example', charlie: 'cmiller@mx.commercial.example' } });
  assert.equal(isp.fetch.length, 1, 'online_gets.isp became a [[fetch]] of the isp route');
  assert.equal([isp.fetch[0]!.host, isp.fetch[0]!.port, isp.fetch[0]!.user, isp.fetch[0]!.password, isp.fetch[0]!.deliverTo], ['pop.isp.example', 110, 'meillo', 'pop secret', ['meillo@pc.home.arpa']]);

  const work = routes['work-1'] as SmarthostRoute;
  assert.equal([work.host, work.port, work.tls, work.heloName], ['mail.work.example', 465, 'implicit', 'pc.work.example'], 'the openssl wrapper became implicit TLS');
  assert.equal([work.popBeforeSmtp?.host, work.popBeforeSmtp?.port, work.popBeforeSmtp?.tls, work.popBeforeSmtp?.user], ['mail.work.example', 995, 'implicit', 'mschnalke']);
  assert.ok(work.priority < routes['work-2']!.priority, 'the connection\'s route files are tried in masqmail\'s order');
  const uucp = routes['work-2'] as PipeRoute;
  assert.equal(uucp.command, ['/usr/bin/uux', '-', '-r', '-a{sender}', 'gateway!rmail', '{recipients}']);
  assert.equal([routes['local-net']!.kind, routes['local-net']!.recipients, routes['local-net']!.priority], ['mx', ['*.home.arpa'], 10]);
});

test('online_detect = file: a route is online exactly while the file names its connection', async () => {
  const { out } = await importSample();
  const flag = path.join(tmpDir(), 'masqmail-route');
  const command = (name: string) => fs.readFileSync(path.join(out, 'routes', `${name}.toml`), 'utf8').match(/^online\.command = (".*")$/m)![1]!;
  const online = (name: string) => spawnSync('/bin/sh', ['-c', JSON.parse(command(name)).split('/var/run/masqmail/masqmail-route').join(flag)]).status === 0;
  assert.not.ok(online('isp'), 'online without the file');
  fs.writeFileSync(flag, 'isp\n');
  assert.ok(online('isp'));
  assert.not.ok(online('work-1'));
  fs.writeFileSync(flag, 'work\n');
  assert.ok(online('work-1') && online('work-2'));
  assert.not.ok(online('isp'));
});

test('masqmail 0.3: query_routes + online_query, permanent_routes, a STARTTLS gnutls-cli wrapper, allowed_/denied_ conditions', async () => {
  const { out, r } = await importSample('masqmail-0.3.conf');
  assert.equal(r.code, 0, r.stderr + r.stdout);
  const routes = Object.fromEntries(loadRoutes(out).map((x) => [x.name, x]));
  const wifi = routes.wifi as SmarthostRoute;
  assert.equal([wifi.host, wifi.port, wifi.tls], ['smtp.example.org', 587, 'starttls']);
  assert.equal(wifi.senders, ['*@example.org', 'root']);
  assert.equal(wifi.notRecipients, ['*@lan.example.org']);
  assert.equal([wifi.rewrite.envelopeFrom, wifi.rewrite.headerFrom], ['me@example.org', 'me@example.org']);
  assert.equal(wifi.online.command, 'test "$(/bin/cat /var/run/masqmail/route)" = \'wifi\'');
  const lan = routes.permanent as SmarthostRoute;
  assert.ok(lan.online.always, 'permanent routes are always online');
  assert.equal(lan.recipients, ['*@lan.example.org']);
});

test('an existing config is kept unless --force, which keeps a backup; a broken masqmail file names file:line', async () => {
  const first = await importSample();
  assert.equal(first.r.code, 0);
  const again = await runCli(['import-masqmail', path.join(first.m, 'masqmail.conf'), '--out', first.out]);
  assert.equal(again.code, 73);
  assert.match(again.stderr, /exists; not overwriting it/);
  const forced = await runCli(['import-masqmail', path.join(first.m, 'masqmail.conf'), '--out', first.out, '--force']);
  assert.equal(forced.code, 0, forced.stderr);
  const backup = /kept in (\S+)/.exec(forced.stdout)![1]!;
  assert.ok(fs.existsSync(path.join(backup, 'routes', 'isp.toml')));

  fs.writeFileSync(path.join(first.m, 'broken.conf'), 'host_name = "x"\nlocal_hosts = "a;b\n');
  const broken = await runCli(['import-masqmail', path.join(first.m, 'broken.conf'), '--out', path.join(tmpDir(), 'o')]);
  assert.equal(broken.code, 65);
  assert.match(broken.stderr, /broken\.conf:2: the quoted value of local_hosts is not closed/);
});

/** A private file holding a marker line, as /etc/shadow would: it must never reach the output. */
const MARKER = 'SHADOW-MARKER-4b1d';
function secretFile(dir: string): string {
  const f = path.join(dir, 'shadow');
  fs.writeFileSync(f, `root:${MARKER}:19000:0:99999:7:::\n${MARKER}_key = ${MARKER}\nmore = "${MARKER}\n`, { mode: 0o640 });
  fs.chmodSync(f, 0o640);
  return f;
}

/** The same secrets, in a file that parses as key = value lines (an env file). */
function secretEnvFile(dir: string): string {
  const f = path.join(dir, 'env');
  fs.writeFileSync(f, `${MARKER.toLowerCase().replace(/-/g, '_')} = ${MARKER}\npassword = "${MARKER}"\n`, { mode: 0o600 });
  fs.chmodSync(f, 0o640);
  return f;
}

/** Everything the import showed and wrote. */
function allOutput(r: { stdout: string; stderr: string }, out: string): string {
  let text = r.stdout + r.stderr;
  const walk = (d: string) => {
    for (const n of fs.existsSync(d) ? fs.readdirSync(d) : []) {
      const p = path.join(d, n);
      if (fs.statSync(p).isDirectory()) walk(p);
      else text += fs.readFileSync(p, 'utf8');
    }
  };
  walk(out);
  return text;
}

for (const [what, conf] of [
  ['alias_file', (s: string) => `alias_file = "${s}"\n`],
  ['host_name', (s: string) => `host_name = "${s}"\n`],
  ['a route file', (s: string) => `online_routes.isp = "${s}"\n`],
  ['a get file', (s: string) => `online_routes.isp = "ROUTE"\nonline_gets.isp = "${s}"\n`],
  ['a list file of a route', (s: string) => `online_routes.isp = "ROUTE_WITH_LIST"\n`],
  ['the pop3_login of a route', (s: string) => `online_routes.isp = "ROUTE_WITH_POP"\n`],
  ['a route file of key = value lines', (s: string) => `online_routes.isp = "${s.replace(/shadow$/, 'env')}"\n`],
] as [string, (s: string) => string][]) {
  test(`a private file reached through ${what} is never echoed or copied`, async () => {
    const dir = tmpDir('tidemail-masqmail-');
    const shadow = secretFile(dir);
    secretEnvFile(dir);
    const route = (name: string, extra: string) => {
      const f = path.join(dir, name);
      fs.writeFileSync(f, `mail_host = "mail.isp.example"\n${extra}`);
      return f;
    };
    const text = conf(shadow)
      .replace('ROUTE_WITH_LIST', route('list.route', `allowed_mail_locals = "${shadow}"\nmap_h_from_addresses = "${shadow}"\n`))
      .replace('ROUTE_WITH_POP', route('pop.route', `pop3_login = "${shadow}"\n`))
      .replace('ROUTE', route('isp.route', ''));
    fs.writeFileSync(path.join(dir, 'masqmail.conf'), `host_name = "pc.example"\n${text.replace(/^host_name = "pc.example"\n/, '')}`);
    const out = path.join(tmpDir(), 'tidemail');
    const r = await runCli(['import-masqmail', path.join(dir, 'masqmail.conf'), '--out', out]);
    assert.not.ok(/shadow.marker.4b1d/i.test(allOutput(r, out)), `the marker leaked:\n${allOutput(r, out)}`);
    assert.not.match(r.stderr, /\n\s+at /, 'a stack trace');
  });
}

test('an unterminated quote in a route file is an error naming file:line; nothing is written', async () => {
  const dir = tmpDir('tidemail-masqmail-');
  fs.writeFileSync(path.join(dir, 'isp.route'), 'mail_host = "mail.isp.example"\nauth_login = "me\n');
  fs.writeFileSync(path.join(dir, 'masqmail.conf'), `host_name = "pc.example"\nonline_routes.isp = "${dir}/isp.route"\n`);
  const out = path.join(tmpDir(), 'tidemail');
  const r = await runCli(['import-masqmail', path.join(dir, 'masqmail.conf'), '--out', out]);
  assert.equal(r.code, 65, r.stdout + r.stderr);
  assert.match(r.stderr, /isp\.route:2: the quoted value of auth_login is not closed/);
  assert.not.match(r.stdout + r.stderr, /every setting was converted/);
  assert.not.ok(fs.existsSync(path.join(out, 'tidemail.toml')), 'a config was written despite the error');
});

test('--root DIR: masqmail.conf and every file it names are read under DIR, the result goes to DIR/etc/tidemail with paths that work there (issue 18)', async () => {
  const root = tmpDir('tidemail-image-');
  fs.mkdirSync(path.join(root, 'etc/masqmail'), { recursive: true });
  for (const name of fs.readdirSync(FIXTURES)) fs.copyFileSync(path.join(FIXTURES, name), path.join(root, 'etc/masqmail', name));
  assert.not.ok(fs.existsSync('/etc/masqmail/isp.route'), 'this machine has a masqmail config: the test would not prove --root');
  const r = await runCli(['import-masqmail', '--root', root]);
  assert.equal(r.code, 0, r.stderr + r.stdout);
  assert.match(r.stdout, new RegExp(`converted ${root}/etc/masqmail/masqmail\\.conf`));
  assert.not.match(r.stdout + r.stderr, /ENOENT|cannot read/);
  const out = path.join(root, 'etc/tidemail');
  const routes = loadRoutes(out);
  assert.equal(routes.map((x) => x.name).sort(), ['isp', 'local-net', 'work-1', 'work-2']);
  const isp = routes.find((x) => x.name === 'isp') as SmarthostRoute;
  assert.is(isp.fetch.length, 1, 'the get file under DIR was read');
  assert.ok(isp.auth?.kind === 'password' && isp.auth.passwordFile.startsWith(out + '/secrets/'), JSON.stringify(isp.auth));
  assert.is(loadConfig(path.join(out, 'tidemail.toml')).local.aliases, path.join(root, 'etc/masqmail/aliases'), 'the aliases file of the image');
  const na = await runCli(['newaliases', '--config', path.join(out, 'tidemail.toml')]);
  assert.is(na.code, 0, na.stderr);

  // Without the route files under DIR: exit 66 (EX_NOINPUT) naming them, and nothing written.
  const bare = tmpDir('tidemail-image-');
  fs.mkdirSync(path.join(bare, 'etc/masqmail'), { recursive: true });
  fs.copyFileSync(path.join(FIXTURES, 'masqmail.conf'), path.join(bare, 'etc/masqmail/masqmail.conf'));
  const missing = await runCli(['import-masqmail', '--root', bare]);
  assert.equal(missing.code, 66, missing.stderr + missing.stdout);
  assert.match(missing.stderr, new RegExp(`${bare}/etc/masqmail/isp\\.route: cannot read it \\(ENOENT\\)`));
  assert.not.match(missing.stdout, /wrote|ok/);
  assert.not.ok(fs.existsSync(path.join(bare, 'etc/tidemail/tidemail.toml')), 'written despite a missing route file');
  const none = await runCli(['import-masqmail', '--root', tmpDir('tidemail-image-')]);
  assert.equal(none.code, 66, none.stderr);
  assert.match(none.stderr, /etc\/masqmail\/masqmail\.conf does not exist/);
});

test('a result that fails its own check is taken back: exit 78, no config left (or the previous one put back), never "ok" (issue 18)', async () => {
  const dir = tmpDir('tidemail-masqmail-');
  fs.writeFileSync(path.join(dir, 'isp.route'), 'mail_host = "mail.isp.example:0"\n');
  fs.writeFileSync(path.join(dir, 'masqmail.conf'), `host_name = "pc.example"\nonline_routes.isp = "${dir}/isp.route"\n`);
  const out = path.join(tmpDir(), 'tidemail');
  const r = await runCli(['import-masqmail', path.join(dir, 'masqmail.conf'), '--out', out]);
  assert.equal(r.code, 78, r.stdout + r.stderr);
  assert.match(r.stderr, /fails its own check[\s\S]*routes\/isp\.toml:\d+:\d+: [\s\S]*nothing was kept: .* was removed again/);
  assert.not.match(r.stdout, /: ok \(|every setting was converted|wrote /);
  assert.not.ok(fs.existsSync(out), 'the failing config was left in place');
  assert.equal(fs.readdirSync(path.dirname(out)), [], 'leftovers beside the output dir');

  // With --force over a working config: the working one is back, byte for byte.
  const good = await importSample();
  assert.equal(good.r.code, 0, good.r.stderr);
  const before = fs.readFileSync(path.join(good.out, 'routes/isp.toml'), 'utf8');
  const forced = await runCli(['import-masqmail', path.join(dir, 'masqmail.conf'), '--out', good.out, '--force']);
  assert.equal(forced.code, 78, forced.stdout + forced.stderr);
  assert.match(forced.stderr, /is as it was before/);
  assert.is(fs.readFileSync(path.join(good.out, 'routes/isp.toml'), 'utf8'), before);
  assert.ok(fs.existsSync(path.join(good.out, 'routes/work-1.toml')));
  assert.equal(fs.readdirSync(path.dirname(good.out)), ['tidemail'], 'leftovers beside the output dir');
});

test('unknown and secret-looking keys: their values are never shown or copied, in masqmail.conf or elsewhere (issue 18)', async () => {
  const dir = tmpDir('tidemail-masqmail-');
  fs.writeFileSync(path.join(dir, 'isp.route'), 'mail_host = "mail.isp.example"\npop_password = "route-s3cret"\n');
  fs.writeFileSync(path.join(dir, 'masqmail.conf'), `host_name = "pc.example"\nlogin_pass = "pop-s3cret"\nonline_routes.isp = "${dir}/isp.route"\n`);
  const out = path.join(tmpDir(), 'tidemail');
  const r = await runCli(['import-masqmail', path.join(dir, 'masqmail.conf'), '--out', out]);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  const all = allOutput(r, out);
  assert.not.match(all, /s3cret/, all);
  assert.match(r.stdout, /masqmail\.conf:2 login_pass \(value not shown\): not a setting/);
  assert.match(r.stdout, /isp\.route:2 \(name and value not shown\)/);
  assert.match(fs.readFileSync(path.join(out, 'tidemail.toml'), 'utf8'), /# masqmail masqmail\.conf:2: login_pass \(value not shown\) — not converted/);
});

test('booleans are validated strictly: do_queue = maybe is an error naming file:line', async () => {
  const dir = tmpDir('tidemail-masqmail-');
  fs.writeFileSync(path.join(dir, 'masqmail.conf'), 'host_name = "pc.example"\ndo_queue = maybe\ndefer_all = off\nuse_syslog = 1\n');
  const out = path.join(tmpDir(), 'tidemail');
  const r = await runCli(['import-masqmail', path.join(dir, 'masqmail.conf'), '--out', out]);
  assert.equal(r.code, 65, r.stdout + r.stderr);
  assert.match(r.stderr, /masqmail\.conf:2: do_queue = "maybe" is not a boolean/);
  assert.not.match(r.stderr, /defer_all|use_syslog/, 'valid booleans were reported');
  assert.not.match(r.stdout + r.stderr, /every setting was converted/);
  assert.not.ok(fs.existsSync(path.join(out, 'tidemail.toml')));
});

test.run();
