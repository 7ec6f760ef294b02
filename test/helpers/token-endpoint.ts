// An OAuth2 token endpoint on loopback (node:http), standing in for Google's or Microsoft's:
// it records each refresh request and answers with whatever the test says.

import http from 'node:http';

export interface TokenRequest {
  method: string;
  contentType: string;
  form: Record<string, string>;
}

export interface TokenReply {
  status: number;
  json: unknown;
}

export interface TokenEndpoint {
  url: string;
  requests: TokenRequest[];
  /** Change the answer for the requests that follow; `n` counts from 1. */
  respond: (form: Record<string, string>, n: number) => TokenReply;
  close(): Promise<void>;
}

/** By default: access tokens "at-1", "at-2", … valid for an hour. */
export async function startTokenEndpoint(respond?: TokenEndpoint['respond']): Promise<TokenEndpoint> {
  const ep: TokenEndpoint = {
    url: '',
    requests: [],
    respond: respond ?? ((_f, n) => ({ status: 200, json: { access_token: `at-${n}`, token_type: 'Bearer', expires_in: 3600 } })),
    close: () => new Promise((r) => {
      server.close(() => r());
      server.closeAllConnections();
    }),
  };
  const server = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (d: string) => (body += d));
    req.on('end', () => {
      const form = Object.fromEntries(new URLSearchParams(body));
      ep.requests.push({ method: req.method ?? '', contentType: req.headers['content-type'] ?? '', form });
      const reply = ep.respond(form, ep.requests.length);
      res.writeHead(reply.status, { 'content-type': 'application/json', 'cache-control': 'no-store', connection: 'close' });
      res.end(JSON.stringify(reply.json));
    });
  });
  const port = await new Promise<number>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve((server.address() as { port: number }).port));
  });
  ep.url = `http://127.0.0.1:${port}/token`;
  return ep;
}
