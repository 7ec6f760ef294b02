// Pipe transport: hands the message to a command (uux, a custom gateway), with the envelope
// in its arguments: "{sender}" becomes the envelope sender and "{recipients}" one argument per
// recipient. Lines end in LF, as Unix programs expect. The exit code decides, sysexits-style:
// 0 delivered, 75 (EX_TEMPFAIL) and 71 (EX_OSERR) or a signal/timeout retried, other
// sysexits codes bounce, anything else is retried (never bounce on an unknown answer).

import { spawn } from 'node:child_process';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { PipeRoute } from '../routes/profile.js';
import { sameForAll, type DeliveryJob, type DeliveryResult, type Transport } from './transport.js';

const PERMANENT = new Set([64, 65, 66, 67, 68, 69, 70, 72, 73, 74, 76, 77, 78]);
const TEMPORARY = new Set([71, 75]);

/** CRLF → LF for programs that read Unix text. */
export class CrlfToLf extends Transform {
  private pendingCr = false;
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    let data = chunk;
    if (this.pendingCr) {
      data = Buffer.concat([Buffer.from('\r'), chunk]);
      this.pendingCr = false;
    }
    if (data.length && data[data.length - 1] === 13) {
      this.pendingCr = true;
      data = data.subarray(0, -1);
    }
    const out: Buffer[] = [];
    let start = 0;
    for (let i = data.indexOf('\r\n'); i !== -1; i = data.indexOf('\r\n', start)) {
      out.push(data.subarray(start, i));
      start = i + 1; // keep the \n
    }
    out.push(data.subarray(start));
    cb(null, Buffer.concat(out));
  }
  override _flush(cb: TransformCallback): void {
    cb(null, this.pendingCr ? Buffer.from('\r') : undefined);
  }
}

export function expandArgs(template: readonly string[], sender: string, recipients: readonly string[]): string[] {
  const out: string[] = [];
  for (const a of template) {
    if (a === '{recipients}') out.push(...recipients);
    else out.push(a.replaceAll('{sender}', sender || 'MAILER-DAEMON'));
  }
  return out;
}

export class PipeTransport implements Transport {
  readonly name: string;
  constructor(private readonly route: PipeRoute) {
    this.name = route.name;
  }

  async deliver(job: DeliveryJob): Promise<Map<string, DeliveryResult>> {
    const [cmd, ...args] = expandArgs(this.route.command, job.sender, job.recipients.map((r) => r.recipient));
    return sameForAll(job, await this.run(cmd!, args, job));
  }

  private run(cmd: string, args: string[], job: DeliveryJob): Promise<DeliveryResult> {
    return new Promise((resolve) => {
      const child = spawn(cmd, args, { stdio: ['pipe', 'ignore', 'pipe'] });
      let stderr = '';
      let timedOut = false;
      child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-500)));
      const timer = setTimeout(() => {
        timedOut = true;
        child.kill('SIGKILL');
      }, this.route.timeoutMs);
      child.on('error', (err) => {
        clearTimeout(timer);
        resolve({ outcome: 'tempfail', message: `cannot run ${cmd}: ${err.message}` });
      });
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        const said = stderr.trim().replace(/\s+/g, ' ');
        const what = `${cmd} ${timedOut ? 'timed out' : signal ? `was killed by ${signal}` : `exited with ${code}`}${said ? `: ${said}` : ''}`;
        if (code === 0) resolve({ outcome: 'ok', message: `${cmd} accepted the message` });
        else if (code !== null && PERMANENT.has(code)) resolve({ outcome: 'permfail', message: `5.3.0 ${what}` });
        else resolve({ outcome: 'tempfail', message: `4.3.0 ${what}${code !== null && !TEMPORARY.has(code) ? ' (not a sysexits code; will retry)' : ''}` });
      });
      child.stdin.on('error', () => undefined); // a command that exits early closes its stdin
      pipeline(job.body(), new CrlfToLf(), child.stdin).catch(() => undefined);
    });
  }

  async close(): Promise<void> {}
}
