// Builds validated-looking runs for reconciler tests without going through YAML.
import { createHash } from 'node:crypto';
import type { LoadedRun, RunSpec, TrainingRun } from '../../src/spec/types.js';

type DeepPartial<T> = { [K in keyof T]?: T[K] extends object ? DeepPartial<T[K]> : T[K] };

export function testSpec(overrides: DeepPartial<RunSpec> = {}): RunSpec {
  const base: RunSpec = {
    provider: 'local',
    code: { path: './examples/tiny-trainer', exclude: [] },
    run: 'python3 train.py',
    env: {},
    secrets: {},
    resources: { instanceTypes: [], market: 'spot', availabilityZones: [], rootVolumeGiB: 100, securityGroupIds: [] },
    checkpoints: { dir: '/opt/runctl/checkpoints', syncInterval: '5m', keep: 3, signal: 'SIGTERM', signalScope: 'main', gracePeriod: '90s' },
    recovery: { maxInterruptions: 20, maxRetriesOnError: 1, seedFromPreviousGeneration: false },
    timeouts: { provisioning: '15m', installing: '30m', training: '48h' },
    budget: {},
    suspend: false,
  };
  return merge(base, overrides) as RunSpec;
}

export function testRun(name: string, overrides: DeepPartial<RunSpec> = {}): LoadedRun {
  const spec = testSpec(overrides);
  const run: TrainingRun = {
    apiVersion: 'runctl.dev/v1alpha1',
    kind: 'TrainingRun',
    metadata: { name, labels: {} },
    spec,
  };
  const what = { code: spec.code, setup: spec.setup, run: spec.run, env: spec.env, secrets: spec.secrets, resources: spec.resources };
  const specHash = createHash('sha256').update(JSON.stringify(what)).digest('hex').slice(0, 16);
  return { run, file: `runs/${name}.yaml`, documentIndex: 0, specHash };
}

function merge(a: unknown, b: unknown): unknown {
  if (b === undefined) return a;
  if (a && b && typeof a === 'object' && typeof b === 'object' && !Array.isArray(a) && !Array.isArray(b)) {
    const out: Record<string, unknown> = { ...(a as Record<string, unknown>) };
    for (const [k, v] of Object.entries(b as Record<string, unknown>)) out[k] = merge(out[k], v);
    return out;
  }
  return b;
}
