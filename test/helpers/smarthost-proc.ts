// A smarthost in its own process (e.g. inside a network namespace). Prints one JSON line per
// event on stdout: {"event":"listening","port":N}, {"event":"connection"},
// {"event":"message","from":…,"to":[…],"tag":…}.
// Usage: node smarthost-proc.js HOST PORT

import { startSmarthost } from './smarthost.js';

const [host = '127.0.0.1', port = '0'] = process.argv.slice(2);
const emit = (o: object) => process.stdout.write(JSON.stringify(o) + '\n');
let seen = 0;
let conns = 0;
const sh = await startSmarthost({ host, port: Number(port) });
emit({ event: 'listening', port: sh.port });
setInterval(() => {
  while (conns < sh.connections) {
    conns++;
    emit({ event: 'connection' });
  }
  while (seen < sh.messages.length) {
    const m = sh.messages[seen++]!;
    emit({ event: 'message', from: m.from, to: m.to, tag: /X-Tag: (\S+)/.exec(m.raw.toString())?.[1] ?? null });
  }
}, 20);
process.on('SIGTERM', () => void sh.close().then(() => process.exit(0)));
