// The short-lived delivery child: started as root by the helper, it becomes the user
// (initgroups, setgid, setuid — in that order, and checked) before it loads any delivery code,
// then delivers the message on its stdin with that user's own rights and sends the result.
//
// Only node: built-ins are imported statically: nothing of ours runs while we are still root.

import type { DeliveryResult } from '../deliver/transport.js';
import type { DeliveryRequest } from './protocol.js';

interface Job {
  req: DeliveryRequest;
  user: { name: string; uid: number; gid: number; home: string };
  extraGid?: number;
  /** Exactly these groups, not the user's own (a 'spool' delivery as the daemon's run user). */
  groups?: number[];
  mda: string[];
}

function becomeUser(job: Job): void {
  const { name, uid, gid } = job.user;
  // initgroups(3): the user's own supplementary groups, as login(1) gives them; a spool
  // delivery as the daemon's user gets its exact list instead (its /etc/group entries may still say mail).
  if (job.groups) process.setgroups!(job.groups);
  else (process as unknown as { initgroups(u: string, g: number): void }).initgroups(name, gid);
  if (job.extraGid !== undefined) process.setgroups!([...process.getgroups!(), job.extraGid]);
  process.setgid!(gid);
  process.setuid!(uid);
  // setuid from root clears every capability; make sure nothing of root is left.
  if (process.getuid!() !== uid || process.geteuid!() !== uid || process.getgid!() !== gid || process.getegid!() !== gid) throw new Error('could not drop root');
  try {
    process.setuid!(0);
  } catch {
    return; // as it must be
  }
  throw new Error('could regain root');
}

async function deliver(job: Job): Promise<DeliveryResult> {
  const { req, user } = job;
  const body = () => process.stdin;
  const info = { sender: req.sender, recipient: req.recipient, user };
  switch (req.kind) {
    case 'maildir':
      return (await import('../deliver/maildir.js')).deliverMaildir(req.path!, body, info);
    case 'mbox':
    case 'file':
      return (await import('../deliver/mbox.js')).deliverMbox(req.path!, body, info);
    case 'spool':
      // The mailbox's name, not the writer: as the daemon wrote these before (local.ts inProcess).
      return (await import('../deliver/mbox.js')).deliverMbox(req.path!, body, { ...info, user: { name: req.user, uid: req.uid, gid: user.gid, home: '/' } });
    case 'pipe':
      return (await import('../deliver/mda.js')).deliverMda(['/bin/sh', '-c', req.command!], body, info, undefined, { expand: false });
    case 'mda':
      return (await import('../deliver/mda.js')).deliverMda(job.mda, body, info);
  }
}

async function main(): Promise<void> {
  const job = await new Promise<Job>((resolve) => process.once('message', (m) => resolve(m as Job)));
  let result: DeliveryResult;
  try {
    becomeUser(job);
    process.chdir('/');
    // The helper stops the message with SIGTERM when the queue could not be read: the stream
    // fails, so Maildir drops its tmp file and mbox cuts the append back, instead of keeping
    // what looks like a whole message.
    process.on('SIGTERM', () => process.stdin.destroy(new Error('the daemon could not read the queued message')));
    result = await deliver(job);
  } catch (err) {
    result = { outcome: 'tempfail', message: `4.3.0 delivery as ${job.user?.name} failed: ${(err as Error).message}` };
  }
  // The helper may be gone (the daemon died and took it along): nobody to tell, and nothing left to do.
  if (!process.connected) process.exit(0);
  process.send!(result, () => process.exit(0));
}

void main();
