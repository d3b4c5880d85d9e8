// Which fields of a run's spec changed, and whether they change what is trained (a new
// generation) or only how the current attempt is supervised (applied in place). Pure. `plan` and
// the reconciler's spec events both use it, so what plan lists is what the event log records.
import type { RunSpec } from '../spec/types.js';

/** Top-level spec fields that define what is trained: the ones the generation hash covers (spec/hash.ts). */
export const TRAINED_FIELDS = ['code', 'setup', 'run', 'env', 'secrets', 'resources'] as const;

export interface FieldChange {
  /** Dotted path under `spec`, e.g. `timeouts.training`, `env.LR`. */
  path: string;
  /** Values are left out for secret references and notifications: plans and events are shared widely. */
  before?: unknown;
  after?: unknown;
  /** True when the field is one of TRAINED_FIELDS (changing it makes a new generation). */
  trained: boolean;
}

/** Every leaf that differs between two specs, sorted by path. Arrays compare as a whole. */
export function specChanges(before: RunSpec, after: RunSpec): FieldChange[] {
  const out: FieldChange[] = [];
  walk(before as unknown as Record<string, unknown>, after as unknown as Record<string, unknown>, '', out);
  return out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

function walk(a: unknown, b: unknown, path: string, out: FieldChange[]): void {
  if (isObject(a) && isObject(b)) {
    for (const key of new Set([...Object.keys(a), ...Object.keys(b)])) {
      walk(a[key], b[key], path ? `${path}.${key}` : key, out);
    }
    return;
  }
  if (JSON.stringify(a) === JSON.stringify(b)) return;
  const top = path.split('.')[0] ?? path;
  const trained = (TRAINED_FIELDS as readonly string[]).includes(top);
  // Secret references, and webhook URLs (a Slack or Discord URL is itself a credential).
  const secret = top === 'secrets' || top === 'notifications';
  out.push(secret ? { path, trained } : { path, before: a, after: b, trained });
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** `timeouts.training: 48h -> 72h`, `env.LR: (none) -> 0.1`, `secrets.HF_TOKEN: changed`. */
export function describeChange(c: FieldChange): string {
  if (!('before' in c) && !('after' in c)) return `${c.path}: changed`;
  return `${c.path}: ${show(c.before)} -> ${show(c.after)}`;
}

function show(v: unknown): string {
  if (v === undefined) return '(none)';
  const text = typeof v === 'string' ? v : JSON.stringify(v);
  const line = text.split('\n')[0] ?? '';
  return line.length > 60 || text.includes('\n') ? `${line.slice(0, 57)}...` : line;
}
