// Stop daemons and smarthosts a test started, after each test, in reverse order; remove temp
// dirs after the file.

import type { Test } from 'uvu';
import type { RunningDaemon } from './daemon.js';
import type { Smarthost } from './smarthost.js';
import { cleanupTmp } from './tmp.js';

export function stopAfterEach(test: Test): <T extends Smarthost | RunningDaemon>(x: T) => T {
  const cleanup: (() => Promise<unknown>)[] = [];
  test.after.each(async () => {
    for (const c of cleanup.splice(0).reverse()) await c();
  });
  test.after(() => cleanupTmp());
  return (x) => {
    cleanup.push('close' in x ? () => x.close() : () => x.stop());
    return x;
  };
}
