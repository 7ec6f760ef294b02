// What the in-session checks cost (issue 6), run by run.ts after the acceptance figures.
// The same load (test/bench/load.ts, pipelining Node client, 4 KiB messages) against daemons that
// differ only in [checks]. The client is untrusted here (trusted_networks is a documentation
// range), because most checks skip trusted clients; it sends to a virtual domain that forwards
// to a remote address, so the relay and recipients checks pass and nothing is delivered locally.
// DNS for dnsbl and spf-dkim-dmarc comes from the local responder (test/helpers/dns-server.ts):
// the figures are the checks' own CPU and round trips, not the Internet's latency.
// Also: the daemon's RSS once mailauth is loaded and has checked messages.

import fs from 'node:fs';
import { makeSite, startDaemon } from '../helpers/daemon.js';
import { startDnsServer } from '../helpers/dns-server.js';
import { readProcMem } from './common.js';
import { runLoad } from './load.js';

const MESSAGES = Number(process.env.BENCH_CHECK_MESSAGES ?? 1000);
const CONCURRENCY = [1, 10, 50];

export async function runCheckBenches(): Promise<{ lines: string[] }> {
  const lines = [`checks (issue 6): accepted msg/s, ${MESSAGES} x 4 KiB from an untrusted client, Node client`];
  const dns = await startDnsServer({
    'bench.example': { TXT: ['v=spf1 ip4:127.0.0.1 -all'] },
    '_dmarc.bench.example': { TXT: ['v=DMARC1; p=none'] },
  });
  const dnsAt = `127.0.0.1:${dns.port}`;
  const variants: [string, string][] = [
    ['relay+recipients only', '[checks]\ndata = []'],
    ['default (+syntax)', ''],
    ['+dnsbl', `[checks]\nconnect = ["dnsbl"]\n[checks.dnsbl]\nzones = ["bl.bench.example"]\nservers = ["${dnsAt}"]`],
    ['+ratelimit', '[checks]\nrcpt = ["ratelimit"]\ndata = ["syntax", "ratelimit"]\n[checks.ratelimit]\nper_ip = "1000000/1h"'],
    ['+spf-dkim-dmarc', `[checks]\nmail = ["spf-dkim-dmarc"]\ndata = ["syntax", "spf-dkim-dmarc"]\n[checks.spf-dkim-dmarc]\ndns_servers = ["${dnsAt}"]`],
  ];
  lines.push(`  ${'checks'.padEnd(24)}${CONCURRENCY.map((c) => `c=${c}`.padStart(8)).join('')}   RSS after`);
  try {
    for (const [label, toml] of variants) {
      const site = await makeSite(`[log]\nlevel = "warn"\n[local.virtual."bench.test"]\n"*" = "sink@remote.example"\n${toml}\n`, {
        smtpToml: 'greet_delay = "0s"\nmax_messages_per_connection = 100000\nmax_connections_per_ip = 100',
      });
      fs.writeFileSync(site.configPath, fs.readFileSync(site.configPath, 'utf8').replace(/^trusted_networks = .*$/m, 'trusted_networks = ["192.0.2.0/24"]'));
      const d = await startDaemon(site);
      try {
        const rates: string[] = [];
        for (const c of CONCURRENCY) {
          const r = await runLoad({ host: '127.0.0.1', port: site.port, messages: MESSAGES, size: 4096, concurrency: c, from: 'bench@bench.example', to: 'x@bench.test' });
          rates.push(r.failed ? `${Math.round(r.rate)}!` : String(Math.round(r.rate)));
          if (r.failed) lines.push(`    ${label} c=${c}: ${r.failed} failed: ${r.errors[0] ?? ''}`);
        }
        const mem = readProcMem(d.proc.pid!);
        lines.push(`  ${label.padEnd(24)}${rates.map((r) => r.padStart(8)).join('')}   ${mem ? (mem.rssKiB / 1024).toFixed(1) + ' MB' : '?'}`);
      } finally {
        await d.stop();
      }
    }
  } finally {
    await dns.close();
  }
  lines.push('  ("!": some messages were refused; the first reply is shown above)');
  return { lines };
}

// Run alone: node dist/test/bench/checks.js
if (import.meta.url === `file://${process.argv[1]}`) {
  const r = await runCheckBenches();
  console.log(r.lines.join('\n'));
  process.exit(0);
}
