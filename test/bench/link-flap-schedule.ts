// Link-flap benchmark (link-flap.ts): the schedule it drives — carrier down 5–60 s, up 5–30 s
// with loss, alternating, drawn from a seeded PRNG so a seed gives the same flaps on every machine.

export const LOSS_PERCENT = 20;
export const DOWN_S: [number, number] = [5, 60];
export const UP_S: [number, number] = [5, 30];
export const INJECT_EVERY_MS = 2000;
export const DRAIN_TIMEOUT_MS = 120_000;

/** mulberry32: a tiny seeded PRNG, so a seed gives the same schedule on every machine. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface Phase {
  up: boolean;
  /** seconds from the start of the schedule */
  startS: number;
  lenS: number;
}

/** Alternating down/up phases (whole seconds), starting down, cut at `minutes`. */
export function makeSchedule(seed: number, minutes: number): Phase[] {
  const rnd = mulberry32(seed);
  const total = Math.round(minutes * 60);
  const phases: Phase[] = [];
  let t = 0;
  let up = false;
  while (t < total) {
    const [lo, hi] = up ? UP_S : DOWN_S;
    const len = Math.min(lo + Math.floor(rnd() * (hi - lo + 1)), total - t);
    phases.push({ up, startS: t, lenS: len });
    t += len;
    up = !up;
  }
  return phases;
}
