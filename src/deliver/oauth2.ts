// OAuth2 for SMTP AUTH — being written (issue 4). Until then an OAuth2 route defers its mail
// with this explanation instead of failing silently.

import type SMTPConnection from 'nodemailer/lib/smtp-connection/index.js';
import type { SmtpAuthSpec } from '../routes/profile.js';

export async function oauth2Login(_conn: SMTPConnection, auth: Extract<SmtpAuthSpec, { kind: 'oauth2' }>): Promise<void> {
  throw new Error(`OAuth2 login for ${auth.user} is not available in this build`);
}
