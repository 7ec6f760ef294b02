// `tidemail check [--json]`: the startup doctor. Each probe (src/doctor/) prints OK, WARN or FAIL
// with the fix: the configuration, the state directory, the listening ports, the certificate,
// every route that is online now (smarthost reachable, TLS verified, a test login) and its POP3
// accounts (login, TLS, UIDL; nothing fetched or deleted), and for a
// site on the Internet its DNS records and port 25. Exits 0 when nothing FAILs, 78 when the
// configuration is invalid, 69 (EX_UNAVAILABLE) for any other FAIL.

import { eachArg } from './args.js';
import { controlRequest } from '../control/client.js';
import { controlSocketPath } from '../control/protocol.js';
import { UsageError } from '../errors.js';
import { probeCertificate } from '../doctor/certificate.js';
import { probeConfig } from '../doctor/config.js';
import { probeDns, type DnsProbeOptions } from '../doctor/dns.js';
import { formatFinding, guarded, ok, type Finding } from '../doctor/finding.js';
import { probeLinks, type LinkAnswer } from '../doctor/links.js';
import { probePorts } from '../doctor/ports.js';
import { probeRoutes } from '../doctor/routes.js';
import { probeFetch } from '../doctor/fetch.js';
import { probeState } from '../doctor/state.js';
import { probeLocalUsers } from '../doctor/local-users.js';
import { probeAliases } from '../doctor/aliases.js';
import { probeRelay } from '../doctor/relay.js';
import { probeAlerts } from '../doctor/alerts.js';
import { takeConfigOption } from './context.js';
import { EX } from './exit.js';
import { usageLine } from './usage.js';
import { printableJson, printableLines } from '../log/printable.js';

const USAGE = usageLine('check');

interface CheckArgs {
  json: boolean;
  dns: DnsProbeOptions;
}

function parseArgs(args: string[]): CheckArgs {
  const out: CheckArgs = { json: false, dns: {} };
  eachArg(args, USAGE, ({ flag, raw, value }) => {
    if (flag === '--json') out.json = true;
    else if (flag === '--dns-server') (out.dns.servers ??= []).push(value());
    else if (flag === '--domain') (out.dns.domains ??= []).push(value());
    else if (flag === '--port25-domain') out.dns.port25Domain = value();
    else throw new UsageError(`unexpected argument "${raw}"\n${USAGE}`);
  });
  return out;
}

interface DaemonStatus {
  pid: number;
  routes: { name: string; online: boolean; why?: string }[];
}

export async function runCheck(argv: string[]): Promise<number> {
  const args = [...argv];
  const configPath = takeConfigOption(args);
  const opts = parseArgs(args);
  const findings: Finding[] = [];
  const print = (fs: Finding[]) => {
    findings.push(...fs);
    // Findings quote servers' greetings and replies: escaped (printable.ts).
    if (!opts.json) for (const f of fs) process.stdout.write(printableLines(formatFinding(f)) + '\n');
  };

  const { findings: cfg, loaded } = await probeConfig(configPath);
  print(cfg);
  if (loaded) {
    const { config, routes } = loaded;
    // A running daemon knows the links best (hooks, overrides) and holds the ports.
    const st = (await controlRequest(controlSocketPath(config.stateDir), { cmd: 'status' }, 10_000).catch(() => null)) as DaemonStatus | null;
    print([ok('daemon', st ? `running (pid ${st.pid})` : 'not running')]);
    print(await guarded('state dir', () => probeState(config)));
    print(await guarded('ports', () => probePorts(config, st?.pid ?? null)));
    print(await guarded('certificate', () => probeCertificate(config)));
    print(await guarded('local users', () => probeLocalUsers(config)));
    print(await guarded('aliases', () => probeAliases(config)));
    const links: LinkAnswer[] = st
      ? st.routes.map((r) => ({ route: r.name, online: r.online, why: r.why ?? '' }))
      : await probeLinks(routes, { tcp: true });
    print(await guarded('routes', () => probeRoutes(routes, links, config.hostname)));
    print(await guarded('fetch', () => probeFetch(routes, links)));
    // [relay] next hops are routes of kind mx too, but say nothing about this host's own DNS.
    print(await guarded('dns', () => probeDns(config, routes.filter((r) => !(r.kind === 'mx' && r.nextHop)), links, opts.dns)));
    if (config.relay.domains.length) print(await guarded('relay', () => probeRelay(config, routes, opts.dns.servers)));
    print(await guarded('alerts', () => probeAlerts(config)));
  }
  const count = (l: Finding['level']) => findings.filter((f) => f.level === l).length;
  const failed = count('fail');
  if (opts.json) {
    process.stdout.write(printableJson({ ok: failed === 0, findings }, 2) + '\n');
  } else {
    process.stdout.write(`\n${count('ok')} ok, ${count('warn')} warning(s), ${failed} failure(s)${count('skip') ? `, ${count('skip')} skipped` : ''}\n`);
  }
  if (!loaded) return EX.CONFIG;
  return failed ? EX.UNAVAILABLE : EX.OK;
}
