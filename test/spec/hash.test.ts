// The generation hash changes exactly when what is trained changes.
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadRuns } from '../../src/spec/load.js';
import { specHash } from '../../src/spec/hash.js';
import { localSpec, NO_PROJECT, tempRepo } from './helpers.js';

async function hashOf(yaml: string): Promise<string> {
  const repo = tempRepo();
  const file = repo.write('runs/run.yaml', yaml);
  const { runs, diagnostics } = await loadRuns([file], { repoRoot: repo.root, project: NO_PROJECT });
  expect(diagnostics.filter((d) => d.severity === 'error')).toEqual([]);
  return runs[0]!.specHash;
}

const base = localSpec('h', '  env: {A: "1", B: "2"}\n  resources: {market: spot, rootVolumeGiB: 100}\n');

describe('specHash', () => {
  it('is a stable 16-hex-digit value', async () => {
    const hash = await hashOf(base);
    expect(hash).toMatch(/^[0-9a-f]{16}$/);
    expect(await hashOf(base)).toBe(hash);
  });

  it('ignores key order, comments, quoting, flow vs block style and spelled-out defaults', async () => {
    const hash = await hashOf(base);
    const rewritten = [
      '# the same run, written differently',
      'kind: TrainingRun',
      'apiVersion: "runctl.dev/v1alpha1"',
      'metadata: {name: h}',
      'spec:',
      '  run: "python3 train.py"   # unchanged',
      '  env:',
      '    B: "2"',
      "    A: '1'",
      '  code:',
      '    path: code/',
      '    exclude: []',
      '  resources: {rootVolumeGiB: 100}',
      '  secrets: {}',
      '  provider: local',
      '',
    ].join('\n');
    expect(await hashOf(rewritten)).toBe(hash);
  });

  it('ignores fields that only change how an attempt is supervised', async () => {
    const hash = await hashOf(base);
    const supervised = `${base}  timeouts: {training: 2h}\n  budget: {maxCostUSD: 10}\n  recovery: {maxInterruptions: 3}\n  suspend: true\n  checkpoints: {keep: 9}\n  rehearsal: {interruptAfter: 1m}\n`;
    expect(await hashOf(supervised.replace('metadata:\n  name: h', 'metadata:\n  name: h\n  labels: {x: y}'))).toBe(hash);
  });

  it.each([
    ['run', base.replace('python3 train.py', 'python3 train.py --lr 0.1')],
    ['setup', `${base}  setup: pip install torch\n`],
    ['env', base.replace('A: "1"', 'A: "2"')],
    ['secrets', `${base}  secrets: {HF_TOKEN: ssm:/team/hf}\n`],
    ['resources', base.replace('rootVolumeGiB: 100', 'rootVolumeGiB: 200')],
    ['code.exclude', base.replace('code: {path: ./code}', 'code: {path: ./code, exclude: [data]}')],
  ])('changes when %s changes', async (_field, changed) => {
    expect(await hashOf(changed)).not.toBe(await hashOf(base));
  });

  it('is what LoadedRun.specHash holds', async () => {
    const repo = tempRepo();
    const file = repo.write('runs/run.yaml', base);
    const { runs } = await loadRuns([path.relative(process.cwd(), file)], { repoRoot: repo.root, project: NO_PROJECT });
    expect(runs[0]!.specHash).toBe(specHash(runs[0]!.run));
    expect(JSON.parse(JSON.stringify(runs[0])).specHash).toBe(specHash(runs[0]!.run));
  });
});
