// Our own delivery status notifications as an intake source: the runner composes the DSN
// (queue/bounce.ts) and queues it through the one pipeline like every other message, so it gets
// the same trace line, header handling and commit. Of the checks only the signers run (DKIM for
// MAILER-DAEMON@our host, as Postfix's non_smtpd_milters would sign it), and nothing refuses it:
// the notice that tells a sender their mail failed must go out. It is never copied to the
// archive, and goes from the null sender, so a bounce never bounces.

import type { Check, CheckContext } from '../checks/check.js';
import { rfc5322Date } from '../message/date.js';
import { submit, type IntakeTarget } from './pipeline.js';

/** A composed notification: `text` about message `about`, for `to`. */
export interface Notice {
  about: string;
  to: string;
  text: string;
}

/** Queues a notice; resolves with its queue id. `checks`: the local-submission checks (signers). */
export function submitBounce(target: IntakeTarget, o: { hostname: string; checks: readonly Check[] }, n: Notice): Promise<string> {
  return submit(target, {
    kind: 'bounce',
    hostname: o.hostname,
    // Postfix's bounce daemon writes "Received: by HOST (Postfix) id ID; DATE" the same way.
    trace: (id) => `Received: by ${o.hostname} (tidemail, delivery status notification)\r\n\tid ${id}; ${rfc5322Date()}\r\n`,
    checks: o.checks,
    context: (msg): CheckContext => ({
      phase: 'data', sessionId: `bounce-${msg.queueId}`, listener: 'pickup', trusted: true, connection: {}, transaction: {},
      clientAddress: '127.0.0.1', sender: '', recipients: [n.to], tls: false, ...msg,
    }),
    onRefusal: 'queue',
    logFields: { for: n.about },
  }, { sender: '', recipients: [n.to], via: 'bounce' }, once(Buffer.from(n.text, 'utf8')));
}

async function* once(b: Buffer): AsyncGenerator<Buffer> {
  yield b;
}
