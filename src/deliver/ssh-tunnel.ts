// SSH tunnel hop — being written (issue 4).

import type { SshRoute } from '../routes/profile.js';
import type { SmtpHop } from './smtp.js';

export function sshHop(route: SshRoute): SmtpHop {
  return {
    label: `ssh ${route.sshHost}`,
    host: route.targetHost,
    port: route.targetPort,
    servername: route.targetHost,
    openStream: () => Promise.reject(new Error('SSH tunnels are not available in this build')),
  };
}
