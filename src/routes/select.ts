// Choosing a route for one recipient: the first profile (in priority order) whose criteria
// match and that is online right now. No match online means the recipient waits.

import { criteriaMatch } from './match.js';
import type { RouteProfile } from './profile.js';

export type RouteChoice = { route: RouteProfile } | { route: null; reason: string; waitingFor?: string };

export function selectRoute(
  routes: readonly RouteProfile[],
  sender: string,
  recipient: string,
  isOnline: (r: RouteProfile) => boolean,
): RouteChoice {
  let matchedOffline: RouteProfile | null = null;
  for (const r of routes) {
    if (!criteriaMatch(r, sender, recipient)) continue;
    // local-only is a decision, not a link: matching mail never leaves by a later route.
    if (r.kind === 'local-only') return { route: null, reason: `route ${r.name} is local-only: this mail does not leave the machine`, waitingFor: r.name };
    if (isOnline(r)) return { route: r };
    matchedOffline ??= r;
  }
  if (matchedOffline) return { route: null, reason: `route ${matchedOffline.name} is offline`, waitingFor: matchedOffline.name };
  return {
    route: null,
    reason: routes.length ? 'no route matches this sender/recipient' : 'no route configured (add a file under routes/)',
  };
}
