// `tidemail daemon`: runs in the foreground (systemd, procd and runit supervise it).

import { Daemon } from '../daemon.js';
import { log } from '../log/log.js';
import { takeConfigOption } from './context.js';
import { EX } from './exit.js';

export async function runDaemon(argv: string[]): Promise<number> {
  const args = [...argv];
  const configPath = takeConfigOption(args);
  const daemon = await Daemon.start({ configPath });
  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (sig: string) => {
      if (stopping) return;
      stopping = true;
      log.info(null, `received ${sig}, stopping`);
      daemon.stop().then(() => resolve(EX.OK), () => resolve(EX.SOFTWARE));
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGHUP', () => {
      daemon.reload().catch((err: Error) => log.error(null, 'reload failed, keeping the old configuration', { error: err.message }));
    });
  });
}
