import type { ForwardFile } from '../local/forward.js';

// What the network-facing daemon and its privileged delivery helper say to each other over
// the IPC channel of child_process.fork (a socketpair only the two of them hold).
//
// One request per delivery; the message body follows in chunks the helper asks for one at a
// time ("more"), so a 50 MB message never sits in either process's memory.

/** Fixed at spawn from root's configuration; the daemon cannot change it later. */
export interface HelperSettings {
  /** Root and uids below this are refused. */
  minUid: number;
  /**
   * Absolute [local] maildir/mbox templates with %u (/var/mail/%u, /srv/mail/%u/Maildir): their
   * expansion for the user is allowed besides the user's home. Root wrote them, not the daemon.
   */
  templates: string[];
  /**
   * [local] maildir and mbox as configured ("~/Maildir", "/var/mail/%u"): a maildir or mbox
   * delivery goes to exactly that user's expansion of them, never to another file in the home
   * (~/.ssh/authorized_keys, ~/.profile), whatever the daemon asks.
   */
  maildir: string;
  mbox: string;
  /** [local] mda argv (with {sender} {recipient} {user}); the helper runs only this one. */
  mda: string[];
  /** Whether ~/.forward may name commands / files ([local] allow_mail_to_commands/files has "forward"). */
  forwardCommands: boolean;
  forwardFiles: boolean;
  /**
   * The daemon's run user, as root resolved it before the fork: a 'spool' delivery (root's and
   * system accounts' /var/mail/NAME) runs as this user plus the spool dir's group, and only
   * then. Absent: 'spool' is refused.
   */
  spoolAs?: { name: string; uid: number; gid: number };
}

/**
 * spool: an mbox in a configured spool template (/var/mail/%u) for a name the helper does not
 * deliver as (root, a system account, a passwd_file-only user): written as the daemon's run user
 * with the spool dir's group, so the daemon itself needs no group `mail`.
 */
export type DeliveryKind = 'maildir' | 'mbox' | 'file' | 'pipe' | 'mda' | 'spool';

export interface DeliveryRequest {
  /** Login name; must be in the system's passwd with this uid. */
  user: string;
  uid: number;
  kind: DeliveryKind;
  /** maildir/mbox/file: where; must be inside the user's home (or the spool file for mbox); spool: exactly a template's expansion. */
  path?: string;
  /** pipe: the command from the user's ~/.forward (checked there). */
  command?: string;
  sender: string;
  recipient: string;
}

export interface HelperResult {
  outcome: 'ok' | 'tempfail' | 'permfail';
  message: string;
}

export type ToHelper =
  | { t: 'deliver'; id: number; req: DeliveryRequest }
  /** Read ~user/.forward for the resolver (the daemon cannot enter a 0700 home). */
  | { t: 'forward'; id: number; user: string; uid: number }
  | { t: 'data'; id: number; chunk: Buffer }
  | { t: 'end'; id: number }
  /** Reading the queued message failed: the delivery must not keep what it got. */
  | { t: 'abort'; id: number; message: string };

export type FromHelper =
  | { t: 'ready' }
  | { t: 'more'; id: number }
  | { t: 'result'; id: number; result: HelperResult }
  | { t: 'forward'; id: number; forward: ForwardFile | { kind: 'error'; message: string } };
