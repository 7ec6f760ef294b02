// sendmail's command line. It is not getopt-shaped: options may carry their value attached
// (-fuser) or in the next word (-f user), -o and -b take one attached letter, and unknown
// legacy options must be accepted and ignored, as every sendmail replacement does. Long
// options (--config) are not sendmail's: a usage error naming the right one.

export type SendmailMode = 'deliver' | 'smtp' | 'mailq' | 'runq' | 'newaliases' | 'daemon';

export interface SendmailArgs {
  mode: SendmailMode;
  /** -t: take recipients from To/Cc/Bcc. */
  extractRecipients: boolean;
  /** -i / -oi: a line with a single dot does not end the message. */
  ignoreDots: boolean;
  sender?: string;
  fullName?: string;
  verbose: boolean;
  configPath?: string;
  recipients: string[];
  /** Options accepted for compatibility but ignored (shown with -v). */
  ignored: string[];
}

/** Options whose value may be the next word. */
const WITH_VALUE = new Set(['f', 'r', 'F', 'B', 'N', 'R', 'V', 'X', 'C', 'L', 'h', 'O', 'p']);

export class SendmailUsageError extends Error {}

export function parseSendmailArgs(argv: readonly string[]): SendmailArgs {
  const a: SendmailArgs = { mode: 'deliver', extractRecipients: false, ignoreDots: false, verbose: false, recipients: [], ignored: [] };
  let i = 0;
  const value = (opt: string, attached: string): string => {
    if (attached) return attached;
    const next = argv[++i];
    if (next === undefined) throw new SendmailUsageError(`option -${opt} requires an argument`);
    return next;
  };
  for (; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') {
      i++;
      break;
    }
    if (!arg.startsWith('-') || arg === '-') break;
    // No sendmail has long options (Postfix's refuses them too): ignoring `--config FILE` would
    // also make FILE a recipient. (--help is answered before parsing.)
    if (arg.startsWith('--')) throw new SendmailUsageError(unknownLongOption(arg));
    const opt = arg[1]!;
    const rest = arg.slice(2);
    if (WITH_VALUE.has(opt)) {
      const v = value(opt, rest);
      if (opt === 'f' || opt === 'r') a.sender = v;
      else if (opt === 'F') a.fullName = v;
      else if (opt === 'C') a.configPath = v;
      else a.ignored.push(`-${opt} ${v}`);
      continue;
    }
    switch (opt) {
      case 't':
        a.extractRecipients = true;
        if (rest) parseFlags(rest, a, arg);
        break;
      case 'i':
        a.ignoreDots = true;
        if (rest) parseFlags(rest, a, arg);
        break;
      case 'v':
        a.verbose = true;
        if (rest) parseFlags(rest, a, arg);
        break;
      case 'o':
        if (rest === 'i') a.ignoreDots = true;
        else a.ignored.push(arg); // -oem, -oee, -oep, -odb, -oQ…: tolerated
        break;
      case 'b':
        a.mode = modeOf(rest, arg);
        break;
      case 'q':
        // -q runs the queue; -q15m (with -bd) is an interval, -qR/-qS select: all mean "run it".
        if (a.mode === 'deliver') a.mode = 'runq';
        if (rest) a.ignored.push(arg);
        break;
      default:
        a.ignored.push(arg); // -m, -n, -U, -G, -Am, -Ac, -d…, -e…: legacy, ignored as sendmail does
    }
  }
  for (; i < argv.length; i++) a.recipients.push(argv[i]!);
  return a;
}

/** What a long option a user may try is called here (sendmail's options are single letters). */
const LONG_TO_SHORT: Record<string, string> = {
  config: '-C FILE', from: '-f ADDRESS', sender: '-f ADDRESS', verbose: '-v', 'read-recipients': '-t', 'full-name': '-F NAME',
};

function unknownLongOption(arg: string): string {
  const name = arg.slice(2).split('=')[0]!;
  const short = LONG_TO_SHORT[name];
  return `unknown option ${arg.length > 40 ? `${arg.slice(0, 40)}…` : arg}: ${short ? `use ${short}` : 'sendmail takes single-letter options'} (sendmail --help lists them)`;
}

/** Bundled single-letter flags such as -ti or -it. */
function parseFlags(flags: string, a: SendmailArgs, arg: string): void {
  for (const f of flags) {
    if (f === 't') a.extractRecipients = true;
    else if (f === 'i') a.ignoreDots = true;
    else if (f === 'v') a.verbose = true;
    else a.ignored.push(arg);
  }
}

function modeOf(letter: string, arg: string): SendmailMode {
  switch (letter) {
    case 'm':
      return 'deliver';
    case 's':
      return 'smtp';
    case 'p':
      return 'mailq';
    case 'i':
      return 'newaliases';
    case 'd':
    case 'D':
      return 'daemon';
    default:
      throw new SendmailUsageError(`${arg} is not supported (supported: -bm, -bs, -bp, -bi, -bd)`);
  }
}
