// Where a problem found after loading (a plan-time cloud check) is shown: the loaded run's file is
// read again and the field looked up in that run's own document; a field the file does not write
// (a default from runctl.yaml) is shown at the nearest enclosing node that is written.
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { loadRuns } from '../../src/spec/load.js';
import { diagnosticAt } from '../../src/spec/locate.js';
import type { LoadedRun } from '../../src/spec/types.js';
import { tempRepo } from './helpers.js';

// Storage, region and profile come from runctl.yaml defaults: the files below do not write them.
const PROJECT = { defaults: { region: 'us-east-1', storage: 's3://runctl-locate/runs', iamInstanceProfile: 'runctl-instance' }, prune: false };

function head(name: string): string[] {
  return ['apiVersion: runctl.dev/v1alpha1', 'kind: TrainingRun', 'metadata:', `  name: ${name}`, 'spec:', '  provider: aws', '  code: {path: ./code}', '  run: python3 train.py'];
}

async function load(files: Record<string, string[]>): Promise<Map<string, LoadedRun>> {
  const repo = tempRepo();
  for (const [rel, lines] of Object.entries(files)) repo.write(rel, `${lines.join('\n')}\n`);
  const result = await loadRuns([`${repo.root}/runs`], { repoRoot: repo.root, project: PROJECT });
  expect(result.diagnostics).toEqual([]);
  return new Map(result.runs.map((r) => [r.run.metadata.name, r]));
}

const TYPE_1 = ['spec', 'resources', 'instanceTypes', 1];

describe('diagnosticAt', () => {
  it('points at a list item, in block and in flow style', async () => {
    const runs = await load({
      'runs/block.yaml': [...head('block'), '  resources:', '    instanceTypes:', '      - m5.large', '      - g5.xlarg', '    image: ami-12c6146b'],
      'runs/flow.yaml': [...head('flow'), '  resources:', '    image: ami-12c6146b', '    instanceTypes: [t3.micro,  g5.xlarg]'],
    });
    const block = runs.get('block')!;
    expect(diagnosticAt(block, TYPE_1, 'not offered', 'error')).toEqual({
      file: block.file,
      line: 12,
      column: 9,
      path: 'spec.resources.instanceTypes[1]',
      message: 'not offered',
      severity: 'error',
    });
    expect(diagnosticAt(runs.get('flow')!, TYPE_1, 'm', 'warning')).toMatchObject({ line: 11, column: 32, severity: 'warning' });
  });

  it("looks in the run's own document of a multi-document file", async () => {
    const runs = await load({
      'runs/two.yaml': [
        ...head('first'),
        '  resources: {image: ami-12c6146b, instanceTypes: [m5.large, c5.xlarge]}',
        '---',
        '# the second run',
        ...head('second'),
        '  resources:',
        '    image: ami-12c6146b',
        '    instanceTypes:',
        '      - t3.micro',
        '      - g5.xlarg',
      ],
    });
    const first = runs.get('first')!;
    const second = runs.get('second')!;
    expect([first.documentIndex, second.documentIndex]).toEqual([0, 1]);
    expect(diagnosticAt(first, TYPE_1, 'm', 'error')).toMatchObject({ line: 9, column: 62 });
    expect(diagnosticAt(second, TYPE_1, 'm', 'error')).toMatchObject({ line: 24, column: 9 });
  });

  it('places a field the file does not write at the nearest enclosing node that it does', async () => {
    const runs = await load({ 'runs/d.yaml': [...head('d'), '  resources:', '    image: ami-12c6146b', '    instanceTypes: [t3.micro]'] });
    const d = runs.get('d')!;
    // region comes from runctl.yaml; availabilityZones is not written at all: both land on resources' mapping.
    expect(diagnosticAt(d, ['spec', 'resources', 'region'], 'm', 'error')).toMatchObject({ line: 10, column: 5, path: 'spec.resources.region' });
    expect(diagnosticAt(d, ['spec', 'resources', 'availabilityZones', 0], 'm', 'error')).toMatchObject({ line: 10, column: 5 });
    // checkpoints is not written: the document's mapping, i.e. its first key.
    expect(diagnosticAt(d, ['spec', 'checkpoints', 'storage'], 'm', 'error')).toMatchObject({ line: 6, column: 3 });
  });

  it('falls back to the top of the file when the file is gone since it was loaded', async () => {
    const runs = await load({ 'runs/gone.yaml': [...head('gone'), '  resources: {image: ami-12c6146b, instanceTypes: [t3.micro]}'] });
    const gone = runs.get('gone')!;
    fs.rmSync(gone.file);
    expect(diagnosticAt(gone, TYPE_1, 'm', 'error')).toMatchObject({ file: gone.file, line: 1, column: 1, path: 'spec.resources.instanceTypes[1]' });
  });
});
