// The generation hash: a run gets a new generation exactly when what it trains changes (code,
// setup, run, env, secrets, resources), never for key order, comments, quoting, or fields that
// only change how the current attempt is supervised (timeouts, budget, recovery, suspend, labels).
import { createHash } from 'node:crypto';
import path from 'node:path';
import type { TrainingRun } from './types.js';

export function specHash(run: TrainingRun): string {
  const spec = run.spec;
  const trained = {
    // An empty include ships what no include ships: the same generation.
    code: { ...spec.code, path: normalizeCodePath(spec.code.path), include: spec.code.include?.length ? spec.code.include : undefined },
    setup: spec.setup ?? null,
    run: spec.run,
    env: spec.env,
    secrets: spec.secrets,
    resources: spec.resources,
  };
  return createHash('sha256').update(canonicalJson(trained)).digest('hex').slice(0, 16);
}

/** `./examples/x/`, `examples/x` and `examples//x` name the same directory. */
function normalizeCodePath(codePath: string): string {
  const normalized = path.posix.normalize(codePath.replace(/\\/g, '/')).replace(/\/+$/, '');
  return normalized === '' ? '.' : normalized;
}

/** JSON with object keys sorted at every level and undefined members left out. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value)) return `[${value.map((item) => (item === undefined ? 'null' : canonicalJson(item))).join(',')}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
}
