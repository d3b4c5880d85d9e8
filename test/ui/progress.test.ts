import { describe, expect, it } from 'vitest';
import type { RunStatus } from '../../src/state/types.js';
import { createColors } from '../../src/ui/colors.js';
import { progressBar, renderProgress } from '../../src/ui/progress.js';
import { statusFixture, T0 } from '../state/status-fixture.js';

const now = T0 + 192_000;
const agentTail = (lines: string[]): RunStatus['agent'] => ({ attempt: 1, phase: 'installing', seq: 1, heartbeatAt: '', logTail: lines });

const training = statusFixture('quickstart', { phase: 'Training', attempt: 2, progress: { step: 120, total: 400, loss: 0.31234 } });
const installing = statusFixture('resnet', {
  phase: 'Installing',
  agent: agentTail(['Collecting numpy', 'Downloading numpy-2.0.whl (18 MB)', '\x1b[32m 10%\r 50%\x1b[0m', '', 'Installing collected packages: numpy']),
});
const failed = statusFixture('broken', {
  phase: 'Failed',
  failure: { reason: 'JobFailed', message: 'exit code 1\nTraceback\nValueError' },
  updatedAt: new Date(T0 + 5 * 3_600_000).toISOString(),
});

describe('progressBar', () => {
  it.each([
    [0, 400, '[----------] 0/400'],
    [120, 400, '[###-------] 120/400'],
    [399, 400, '[#########-] 399/400'],
    [400, 400, '[##########] 400/400'],
    [450, 400, '[##########] 450/400'],
  ])('%d of %d', (step, total, text) => {
    expect(progressBar(step, total)).toBe(text);
  });
});

describe('renderProgress', () => {
  it('renders one aligned line per run, with the install tail indented under an Installing run', () => {
    expect(renderProgress([training, installing, failed], undefined, { now, width: 120 })).toEqual([
      'quickstart  Training    attempt 2  [###-------] 120/400  loss 0.3123  3m12s',
      'resnet      Installing  attempt 1                                     3m12s',
      '    Downloading numpy-2.0.whl (18 MB)',
      '     50%',
      '    Installing collected packages: numpy',
      'broken      Failed      attempt 1                                     5h00m  exit code 1 (+2 more lines)',
    ]);
  });

  it('shows the install tail only while Installing, preferring the tail passed in', () => {
    const nowTraining = { ...installing, phase: 'Training' as const };
    expect(renderProgress([nowTraining], undefined, { now })).toEqual(['resnet  Training  attempt 1  3m12s']);
    expect(renderProgress([installing], { resnet: { installTail: ['a', 'b', 'c', 'd'], message: 'pip is slow today' } }, { now })).toEqual([
      'resnet  Installing  attempt 1  3m12s  pip is slow today',
      '    b',
      '    c',
      '    d',
    ]);
    expect(renderProgress([installing], new Map([['resnet', { installTail: [] }]]), { now })).toEqual(['resnet  Installing  attempt 1  3m12s']);
  });

  it('ignores the tail of an earlier attempt', () => {
    const retried = { ...installing, attempt: 2 };
    expect(renderProgress([retried], undefined, { now })).toEqual(['resnet  Installing  attempt 2  3m12s']);
  });

  it('shows steps without a bar when the job does not say its total, and why a launch waits', () => {
    const noTotal = statusFixture('free', { phase: 'Training', progress: { step: 77 } });
    const blocked = statusFixture('gpu', {
      phase: 'Provisioning',
      launchBlocked: { since: new Date(T0).toISOString(), message: 'no spot capacity for g5.xlarge in us-east-1a', retryAt: '', failures: 2 },
    });
    expect(renderProgress([noTotal, blocked], undefined, { now })).toEqual([
      'free  Training      attempt 1  step 77  3m12s',
      'gpu   Provisioning  attempt 1           3m12s  no spot capacity for g5.xlarge in us-east-1a',
    ]);
  });

  it('cuts every line to the width, tails included', () => {
    const lines = renderProgress([training, installing], { resnet: { installTail: ['x'.repeat(200)] } }, { now, width: 40 });
    expect(lines).toEqual([
      'quickstart  Training    attempt 2  [###…',
      'resnet      Installing  attempt 1      …',
      `    ${'x'.repeat(35)}…`,
    ]);
  });

  it('colors the phase only when colors are on, keeping alignment', () => {
    const [line] = renderProgress([training], undefined, { now, colors: createColors(true) });
    expect(line).toBe('quickstart  \x1b[36mTraining\x1b[39m  attempt 2  [###-------] 120/400  loss 0.3123  3m12s');
  });
});
