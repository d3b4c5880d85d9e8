// Checks of `notifications:` (a run's spec and runctl.yaml) that the schema cannot express: exactly
// one of url and urlFrom, the timeout's bounds, and a warning when a plain url carries a
// credential (it would be committed to git: such a URL belongs in urlFrom, docs/notifications.md).
import { credentialInUrl } from '../notify/credentials.js';
import { formatDuration, parseDuration } from './duration.js';
import type { Segment } from './field-path.js';
import { error, warning, type Problem } from './problem.js';

const MIN_TIMEOUT_MS = 1000;
const MAX_TIMEOUT_MS = 5 * 60 * 1000;

/** Problems of the `notifications` list at `at` (e.g. ['spec', 'notifications'] or ['notifications']). */
export function checkNotifications(list: unknown, at: Segment[]): Problem[] {
  if (!Array.isArray(list)) return [];
  const problems: Problem[] = [];
  list.forEach((entry: unknown, i) => {
    if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) return;
    const r = entry as Record<string, unknown>;
    const here: Segment[] = [...at, i];
    const hasUrl = r.url !== undefined;
    const hasFrom = r.urlFrom !== undefined;
    if (!hasUrl && !hasFrom) {
      problems.push(error([...here], 'needs url (http(s)://…) or urlFrom: {env: NAME} (the URL read from the controller’s environment)'));
    } else if (hasUrl && hasFrom) {
      problems.push(error([...here, 'urlFrom'], 'cannot be given together with url: keep urlFrom when the URL is a credential, else keep url', 'key'));
    }
    if (typeof r.url === 'string') {
      const why = credentialInUrl(r.url);
      if (why) {
        problems.push(
          warning([...here, 'url'], `looks like it carries a credential (${why}); anyone who reads this file can post as you: move it to an environment variable and use urlFrom: {env: NAME} instead`),
        );
      }
    }
    if (typeof r.timeout === 'string') {
      let ms: number | undefined;
      try {
        ms = parseDuration(r.timeout);
      } catch {
        ms = undefined; // the schema reports the form
      }
      if (ms !== undefined && (ms < MIN_TIMEOUT_MS || ms > MAX_TIMEOUT_MS)) {
        problems.push(error([...here, 'timeout'], `must be between ${formatDuration(MIN_TIMEOUT_MS)} and ${formatDuration(MAX_TIMEOUT_MS)} (got ${r.timeout})`));
      }
    }
  });
  return problems;
}
