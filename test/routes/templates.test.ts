// The provider templates in the top-level routes/ folder load cleanly with the real route
// loader — as shipped, and with every commented-out setting switched on (so the comments never
// advertise a key that does not exist).

import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { loadRoute } from '../../src/routes/load.js';
import type { RouteProfile, SmarthostRoute } from '../../src/routes/profile.js';
import { REPO } from '../helpers/daemon.js';
import { cleanupTmp, tmpDir, writeFile, writeSecret } from '../helpers/tmp.js';

test.after(() => cleanupTmp());

const TEMPLATES = path.join(REPO, 'routes');
const SECRETS = '/etc/tidemail/secrets/';

/**
 * Copies a template into a temp config dir, pointing /etc/tidemail/secrets/… at a temp dir with a
 * dummy 0600 file for every secret it names, and loads it.
 */
function loadTemplate(name: string, edit: (text: string) => string = (t) => t): { route: RouteProfile; secrets: string } {
  const dir = tmpDir();
  const secrets = path.join(dir, 'secrets') + '/';
  const text = edit(fs.readFileSync(path.join(TEMPLATES, name), 'utf8')).split(SECRETS).join(secrets);
  for (const m of text.matchAll(new RegExp(`"(${secrets.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}[^"]+)"`, 'g'))) {
    if (!fs.existsSync(m[1]!)) writeSecret(m[1]!, `dummy secret for ${path.basename(m[1]!)}\n`);
  }
  const file = writeFile(path.join(dir, 'routes', name), text);
  return { route: loadRoute(file), secrets };
}

/** Turns "# key = value" lines (a commented-out setting) into settings. */
const uncommentAll = (text: string) => text.replace(/^# ([a-z0-9_]+(?:\.[a-z0-9_]+)* = .*)$/gm, '$1');

function smarthost(r: RouteProfile): SmarthostRoute {
  assert.equal(r.kind, 'smarthost');
  return r as SmarthostRoute;
}

test('the shipped templates are the five documented ones', () => {
  assert.equal(fs.readdirSync(TEMPLATES).filter((n) => n.endsWith('.toml')).sort(), ['fastmail.toml', 'gmail.toml', 'isp-465.toml', 'isp-generic.toml', 'outlook.toml']);
});

test('gmail.toml: smtp.gmail.com:587 STARTTLS with OAuth2 from Google\'s token endpoint', () => {
  const { route, secrets } = loadTemplate('gmail.toml');
  const r = smarthost(route);
  assert.equal([r.host, r.port, r.tls, r.tlsVerify], ['smtp.gmail.com', 587, 'starttls', true]);
  assert.equal(r.auth, {
    kind: 'oauth2',
    user: 'you@gmail.com',
    mechanism: 'XOAUTH2',
    tokenUrl: 'https://oauth2.googleapis.com/token',
    clientId: 'YOUR-CLIENT-ID.apps.googleusercontent.com',
    clientSecretFile: `${secrets}gmail.client-secret`,
    refreshTokenFile: `${secrets}gmail.token`,
    scope: 'https://mail.google.com/',
  });
  assert.equal(r.rewrite.envelopeFrom, 'you@gmail.com');
  assert.equal(r.popBeforeSmtp, undefined);
});

test('gmail.toml: the app-password alternative loads as a password login', () => {
  const { route, secrets } = loadTemplate('gmail.toml', (t) => uncommentAll(t.replace(/^auth\.oauth2\..*\n/gm, '')));
  const r = smarthost(route);
  assert.equal(r.auth?.kind, 'password');
  assert.equal(r.auth && 'passwordFile' in r.auth ? r.auth.passwordFile : '', `${secrets}gmail`);
  assert.equal(r.senders, ['*@gmail.com', 'root', 'cron']);
  assert.equal(r.online.interface, 'wan');
});

test('outlook.toml: Microsoft 365 at smtp.office365.com:587 with the v2.0 token endpoint and SMTP.Send scope', () => {
  const { route, secrets } = loadTemplate('outlook.toml');
  const r = smarthost(route);
  assert.equal([r.host, r.port, r.tls], ['smtp.office365.com', 587, 'starttls']);
  assert.equal(r.auth, {
    kind: 'oauth2',
    user: 'you@yourcompany.example',
    mechanism: 'XOAUTH2',
    tokenUrl: 'https://login.microsoftonline.com/common/oauth2/v2.0/token',
    clientId: '00000000-0000-0000-0000-000000000000',
    clientSecretFile: undefined,
    refreshTokenFile: `${secrets}outlook.token`,
    scope: 'https://outlook.office.com/SMTP.Send offline_access',
  });
});

test('isp-generic.toml: 587 with STARTTLS and a password from a 0600 file', () => {
  const { route, secrets } = loadTemplate('isp-generic.toml');
  const r = smarthost(route);
  assert.equal([r.host, r.port, r.tls, r.tlsVerify], ['mail.example.net', 587, 'starttls', true]);
  assert.equal(r.auth, { kind: 'password', user: 'me@example.net', passwordFile: `${secrets}isp`, password: 'dummy secret for isp' });
  assert.equal(r.online.always, true);
});

test('isp-generic.toml: the commented options (SMTP-after-POP, criteria, link, schedule) are real keys', () => {
  const { route, secrets } = loadTemplate('isp-generic.toml', uncommentAll);
  const r = smarthost(route);
  assert.equal(r.popBeforeSmtp, { host: 'pop.example.net', port: 995, tls: 'implicit', user: 'me', passwordFile: `${secrets}isp-pop`, password: 'dummy secret for isp-pop' });
  assert.equal([r.priority, r.schedule, r.online.interface, r.online.tcp], [50, '*/30 * * * *', 'wan', 'mail.example.net:587']);
  assert.equal(r.rewrite.map, { alice: 'alice@example.net' });
});

test('isp-465.toml: implicit TLS on port 465', () => {
  const { route } = loadTemplate('isp-465.toml');
  const r = smarthost(route);
  assert.equal([r.host, r.port, r.tls, r.tlsVerify], ['mail.example.net', 465, 'implicit', true]);
  assert.equal(r.auth?.kind, 'password');
});

test('every template still loads with all its commented-out settings switched on', () => {
  for (const name of ['gmail.toml', 'outlook.toml', 'isp-generic.toml', 'isp-465.toml']) {
    try {
      loadTemplate(name, uncommentAll);
    } catch (err) {
      assert.unreachable(`${name}: ${(err as Error).message}`);
    }
  }
});

test('a template whose secret file is readable by others is refused, naming the file and the fix', () => {
  const dir = tmpDir();
  const text = fs.readFileSync(path.join(TEMPLATES, 'isp-465.toml'), 'utf8').split(SECRETS).join(`${dir}/secrets/`);
  writeFile(path.join(dir, 'secrets', 'isp'), 'pw\n', 0o644);
  const file = writeFile(path.join(dir, 'routes', 'isp.toml'), text);
  assert.throws(() => loadRoute(file), (err: Error) => /readable by others/.test(err.message) && /chmod 600/.test(err.message));
});

test.run();
