// What the fetch-job tests (test/fetch/pop3*.test.ts) hand fetchAccount: an account record, a
// submit that collects what it is handed, and small test messages.

import type { FetchAccount } from '../../src/fetch/account.js';
import type { FetchDeps } from '../../src/fetch/pop3.js';
import type { FetchEnvelope } from '../../src/fetch/recipients.js';
import type { UidlStore } from '../../src/fetch/uidl-store.js';

/** A plain-text account on 127.0.0.1:`port` that keeps its mail, delivering to "me"; `over` changes it. */
export function fetchAccountConfig(name: string, port: number, over: Partial<FetchAccount> = {}): FetchAccount {
  return {
    name,
    route: 'isp',
    intervalMs: 300_000,
    host: '127.0.0.1',
    port,
    tls: 'none',
    user: 'u',
    password: 'p',
    passwordFile: '',
    auth: 'auto',
    keep: true,
    deliverTo: ['me'],
    recipientsFrom: [],
    recipientsDomains: [],
    oversize: 'skip',
    ...over,
  };
}

export const message = (subject: string, body = 'hello\r\n') => `From: a@example.test\r\nTo: me@example.test\r\nSubject: ${subject}\r\nMessage-ID: <${subject.replace(/\W/g, '')}@example.test>\r\n\r\n${body}`;

/** A submit that collects whole messages (fine for small ones) in `got`. */
export function collector(uidls: UidlStore, failOn?: number): FetchDeps & { got: string[]; calls: number; envelopes: FetchEnvelope[] } {
  const deps = {
    uidls,
    got: [] as string[],
    envelopes: [] as FetchEnvelope[],
    calls: 0,
    async submit(_a: FetchAccount, body: AsyncIterable<Buffer>, env: FetchEnvelope) {
      deps.envelopes.push(env);
      const call = ++deps.calls;
      const parts: Buffer[] = [];
      for await (const c of body) {
        parts.push(c);
        if (call === failOn) throw new Error('queue disk full');
      }
      deps.got.push(Buffer.concat(parts).toString('utf8'));
    },
  };
  return deps;
}

/** The Subject of each message, sorted. */
export const subjects = (msgs: string[]) => msgs.map((m) => /Subject: (.*)\r\n/.exec(m)?.[1]).sort();
