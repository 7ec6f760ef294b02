// Direct MX delivery — being written (issue 4).

import type { MxRoute } from '../routes/profile.js';
import type { SmtpHop } from './smtp.js';
import type { DeliveryJob, DeliveryResult } from './transport.js';

export async function mxHops(_route: MxRoute, _job: DeliveryJob): Promise<SmtpHop[] | DeliveryResult> {
  return { outcome: 'tempfail', message: 'direct MX delivery is not available in this build' };
}
