// TLS for the listeners: node:tls is loaded only when a certificate is configured (it costs
// memory at idle), one secure context serves STARTTLS and implicit TLS alike, and a renewed
// certificate replaces it for new handshakes without touching running sessions.

import type { Socket } from 'node:net';
import type { SecureContext, Server as TlsServer, TLSSocket } from 'node:tls';

type TlsModule = typeof import('node:tls');

export interface TlsPair {
  key: Buffer;
  cert: Buffer;
}

// Old LAN devices (printers, cameras) still speak TLS 1.0; smtp-server let them, and so do we.
const OPTIONS = { honorCipherOrder: true, minVersion: 'TLSv1' as const };

export class TlsContext {
  private context: SecureContext;
  private readonly servers: TlsServer[] = [];

  private constructor(private readonly tls: TlsModule, private pair: TlsPair) {
    this.context = tls.createSecureContext({ ...OPTIONS, key: pair.key, cert: pair.cert });
  }

  static async create(pair: TlsPair): Promise<TlsContext> {
    return new TlsContext(await import('node:tls'), pair);
  }

  /** A renewed pair: new handshakes (STARTTLS and implicit) use it. */
  update(pair: TlsPair): void {
    this.pair = pair;
    this.context = this.tls.createSecureContext({ ...OPTIONS, key: pair.key, cert: pair.cert });
    for (const s of this.servers) s.setSecureContext({ ...OPTIONS, key: pair.key, cert: pair.cert });
  }

  /** STARTTLS: the server side of a handshake on an accepted plain socket. */
  wrap(socket: Socket): TLSSocket {
    return new this.tls.TLSSocket(socket, { isServer: true, secureContext: this.context });
  }

  /** Implicit TLS (smtps): a listener whose connections arrive after their handshake. */
  createServer(handshakeTimeoutMs: number, onSecure: (s: TLSSocket) => void): TlsServer {
    const { key, cert } = this.pair;
    const server = this.tls.createServer({ ...OPTIONS, key, cert, handshakeTimeout: handshakeTimeoutMs }, onSecure);
    this.servers.push(server);
    return server;
  }
}
