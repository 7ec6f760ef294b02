// Asking for what the flags left open. On a terminal: a question with the default in brackets
// (Enter takes it), passwords without echo. Without a terminal (scripts, package hooks, CI):
// a usage error naming the flag to pass, so nothing ever hangs waiting for input.

import readline from 'node:readline';
import { UsageError } from '../errors.js';

export interface Question {
  /** The flag that answers it, named in the error when there is no terminal. */
  flag: string;
  /** What to ask: "Your mail address". */
  text: string;
  /** Shown in [brackets] and taken on Enter (terminal only). */
  default?: string;
  /** Returns an error message for a bad answer (asked again on a terminal). */
  validate?: (answer: string) => string | null;
}

export class Asker {
  private rl: readline.Interface | null = null;
  private muted = false;
  private pendingReject: ((e: Error) => void) | null = null;

  constructor(readonly interactive: boolean, private readonly preset: string) {}

  static forStdin(preset: string): Asker {
    return new Asker(Boolean(process.stdin.isTTY), preset);
  }

  private missing(q: Question): never {
    throw new UsageError(`setup ${this.preset}: missing ${q.flag}: ${q.text.charAt(0).toLowerCase()}${q.text.slice(1)}\n  fix: pass ${q.flag} …, or run \`tidemail setup ${this.preset}\` on a terminal to be asked`);
  }

  /** The terminal in readline's raw mode, so nothing typed is echoed by the kernel behind our back. */
  private ensure(): void {
    if (!this.rl) {
      this.rl = readline.createInterface({ input: process.stdin, output: process.stdout, terminal: true });
      // Passwords: print the prompt, swallow the echo of what is typed.
      const rl = this.rl as unknown as { _writeToOutput(s: string): void };
      const write = rl._writeToOutput.bind(rl);
      rl._writeToOutput = (s: string) => {
        if (!this.muted || s.includes('\n')) write(this.muted ? '\n' : s);
      };
      this.rl.on('close', () => this.pendingReject?.(new UsageError('setup: input closed before all questions were answered')));
    }
  }

  private line(prompt: string): Promise<string> {
    this.ensure();
    return new Promise((resolve, reject) => {
      this.pendingReject = reject;
      this.rl!.question(prompt, (a) => {
        this.pendingReject = null;
        resolve(a);
      });
    });
  }

  /** The answer, the default on Enter; on no terminal a UsageError naming q.flag. */
  async ask(q: Question): Promise<string> {
    if (!this.interactive) this.missing(q);
    for (;;) {
      const raw = (await this.line(`${q.text}${q.default ? ` [${q.default}]` : ''}: `)).trim();
      const answer = raw || q.default || '';
      if (!answer) {
        process.stdout.write(`  (an answer is needed; or stop with Ctrl-C and pass ${q.flag})\n`);
        continue;
      }
      const problem = q.validate?.(answer);
      if (!problem) return answer;
      process.stdout.write(`  ${problem}\n`);
    }
  }

  /** A secret typed without echo. */
  async secret(q: Question): Promise<string> {
    if (!this.interactive) this.missing(q);
    for (;;) {
      this.ensure();
      process.stdout.write(`${q.text} (not shown): `);
      this.muted = true;
      let answer: string;
      try {
        answer = await this.line('');
      } finally {
        this.muted = false;
      }
      if (answer) return answer;
    }
  }

  /** yes/no; without a terminal the default. */
  async confirm(text: string, def: boolean): Promise<boolean> {
    if (!this.interactive) return def;
    const a = (await this.line(`${text} [${def ? 'Y/n' : 'y/N'}]: `)).trim().toLowerCase();
    return a ? a.startsWith('y') : def;
  }

  close(): void {
    this.rl?.close();
    this.rl = null;
  }
}
