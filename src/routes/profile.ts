// A route profile: one file in <config dir>/routes/, saying how mail leaves and for which
// senders/recipients. The spine knows one kind, a smarthost.

export type TlsMode = 'starttls' | 'implicit' | 'none';

export interface RouteCriteria {
  /** Globs on the envelope sender: "*@example.net", "root", or a bare domain "example.net". */
  senders: string[];
  recipients: string[];
  notSenders: string[];
  notRecipients: string[];
}

export interface SmarthostRoute extends RouteCriteria {
  kind: 'smarthost';
  name: string;
  file: string;
  /** Lower first; ties are broken by file name. */
  priority: number;
  host: string;
  port: number;
  tls: TlsMode;
  /** Certificate verification; on unless the route file says tls_verify = false. */
  tlsVerify: boolean;
  /** Extra CA certificates (PEM) to trust, e.g. for a self-signed provider. */
  caFile?: string;
  auth?: { user: string; password: string; passwordFile: string };
  heloName?: string;
  maxConnections: number;
  messagesPerConnection: number;
  connectTimeoutMs: number;
}

export type RouteProfile = SmarthostRoute;
