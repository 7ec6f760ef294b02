// A smarthost in its own process (e.g. inside a network namespace). Prints one JSON line per
// event on stdout: {"event":"listening","port":N}, {"event":"connection"},
// {"event":"message","from":…,"to":[…],"tag":…}.
// {"event":"stalled","what":"mail"|"data"} when a reply is withheld on purpose.
// Usage: node smarthost-proc.js HOST PORT [--stall-mail N] [--stall-data N]
//   --stall-mail N  never answer MAIL FROM in the first N transactions (a session hung on the link)
//   --stall-data N  take the first N messages but never answer their end of DATA (reply lost)
//   --pause-read MS stop reading the first message's data for MS ms (our send window fills)
//   --delay-data MS take each message at once, answer its end of DATA MS ms later

import { startSmarthost } from './smarthost.js';

const args = process.argv.slice(2);
const flag = (name: string): number => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args.splice(i, 2)[1]) : 0;
};
let stallMail = flag('--stall-mail');
let stallData = flag('--stall-data');
const pauseRead = flag('--pause-read');
const delayData = flag('--delay-data');
const [host = '127.0.0.1', port = '0'] = args;
const emit = (o: object) => process.stdout.write(JSON.stringify(o) + '\n');
let seen = 0;
let conns = 0;
const sh = await startSmarthost({
  host,
  port: Number(port),
  stallMail: () => stallMail > 0 && stallMail-- > 0,
  stallData: () => stallData > 0 && stallData-- > 0,
  pauseRead: (i) => (i === 0 ? pauseRead : 0),
  dataDelayMs: delayData || undefined,
  onStall: (what) => emit({ event: 'stalled', what }),
});
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
