// SMTP-after-POP — being written (issue 4).

import type { PopBeforeSmtpSpec } from '../routes/profile.js';

export async function popBeforeSmtp(spec: PopBeforeSmtpSpec): Promise<void> {
  throw new Error(`POP3 login to ${spec.host} is not available in this build`);
}
