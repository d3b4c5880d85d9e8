import { describe, expect, it } from 'vitest';
import type { RunStatus } from '../../src/state/types.js';
import { createColors } from '../../src/ui/colors.js';
import { renderDescribe } from '../../src/ui/describe.js';
import { renderStatusTable, renderTable } from '../../src/ui/table.js';
import { stripAnsi } from '../../src/ui/text.js';
import { eventFixture, statusFixture, T0 } from '../state/status-fixture.js';

const now = T0 + 192_000;
const at = (ms: number) => new Date(T0 + ms).toISOString();

const quickstart: RunStatus = statusFixture('quickstart', {
  phase: 'Training',
  attempt: 2,
  interruptions: 1,
  progress: { step: 120, total: 400, loss: 0.31234, metrics: { learning_rate: 0.0003, epoch: 1.5 } },
  instances: [
    { id: 'i-0aaa', type: 'g5.xlarge', market: 'spot', zone: 'us-east-1a', generation: 1, attempt: 1, launchedAt: at(0), endedAt: at(60_000), endReason: 'spot interruption', costUSD: 0.0031, codeBundle: '3f9a0c1d2e4b'.padEnd(64, '0') },
    { id: 'i-0bbb', type: 'g6.xlarge', market: 'spot', zone: 'us-east-1b', generation: 1, attempt: 2, launchedAt: at(70_000), costUSD: 0.0011, codeBundle: '3f9a0c1d2e4b'.padEnd(64, '0') },
  ],
  lastCheckpoint: { id: '000004', step: 100, files: 2, bytes: 2048, at: at(150_000), generation: 1 },
  checkpoints: [
    { id: '000003', files: 2, bytes: 2048, at: at(120_000), uploaded: 2, reused: 0 },
    { id: '000004', step: 100, stepSource: 'huggingface', files: 2, bytes: 2048, at: at(150_000), uploaded: 1, reused: 1 },
  ],
  conditions: [
    { type: 'Ready', status: 'True', reason: 'Training', message: 'training step 120', lastTransitionTime: at(100_000) },
    { type: 'Interrupted', status: 'False', reason: 'Resumed', message: 'resumed from 000002\non i-0bbb', lastTransitionTime: at(70_000) },
  ],
  source: { file: 'runs/quickstart.yaml', revision: 'abc1234' },
  costUSD: 0.0042,
  ledger: {
    attempts: [
      {
        generation: 1,
        attempt: 1,
        instanceId: 'i-0aaa',
        type: 'g5.xlarge',
        zone: 'us-east-1a',
        market: 'spot',
        launchedAt: at(0),
        readyAt: at(8_000),
        setupStartedAt: at(9_000),
        setup: { cache: 'rebuilt', seconds: 20 },
        firstTrainedAt: at(30_000),
        noticedAt: at(50_000),
        finalCheckpointAt: at(55_000),
        finalCheckpointSafe: true,
        endedAt: at(60_000),
        seconds: 60,
        usdPerHour: 0.186,
        costUSD: 0.0031,
        onDemandUSD: 0.0168,
        savingsUSD: 0.0137,
      },
      {
        generation: 1,
        attempt: 2,
        instanceId: 'i-0bbb',
        type: 'g6.xlarge',
        zone: 'us-east-1b',
        market: 'spot',
        launchedAt: at(70_000),
        readyAt: at(78_000),
        setupStartedAt: at(79_000),
        setup: { cache: 'restored', seconds: 2.5, savedSeconds: 17.5 },
        restored: { id: '000002', step: 60 },
        firstTrainedAt: at(84_000),
        costUnknown: 'i-0bbb: pricing:GetProducts was denied',
      },
    ],
    interruptions: [
      {
        generation: 1,
        attempt: 1,
        nextAttempt: 2,
        noticedAt: at(50_000),
        trainingAgainAt: at(84_000),
        recoverySeconds: 34,
        stepsRedone: 4,
        legs: { finalCheckpoint: 5, launch: 20, boot: 8, sync: 1, setup: 5 },
      },
    ],
    costUSD: 0.0031,
    onDemandUSD: 0.0168,
    savingsUSD: 0.0137,
    unknown: ['attempt 2: i-0bbb: pricing:GetProducts was denied'],
    recoverySeconds: 34,
    stepsRedone: 4,
  },
});

describe('renderTable', () => {
  it('aligns columns, right-aligns where asked, and leaves no trailing spaces', () => {
    expect(renderTable(['NAME', 'N', 'NOTE'], [['a', '1', ''], ['longer', '100', 'x']], { align: ['left', 'right'] })).toBe(
      ['NAME       N   NOTE', 'a          1', 'longer   100   x', ''].join('\n'),
    );
  });
});

describe('renderStatusTable', () => {
  it('lists run, phase, attempt, age, instance and last checkpoint', () => {
    const pending = statusFixture('tiny', { createdAt: at(150_000) });
    const done = statusFixture('old-run', { phase: 'Completed', createdAt: at(-3 * 86_400_000 - 4 * 3_600_000), instances: [{ ...quickstart.instances[0]!, endedAt: at(1) }] });
    expect(renderStatusTable([quickstart, pending, done], { now })).toBe(
      [
        'RUN          PHASE       ATTEMPT   PROGRESS              AGE     INSTANCE                   LAST CHECKPOINT',
        'quickstart   Training          2   120/400 loss 0.3123   3m12s   i-0bbb (g6.xlarge, spot)   000004 step 100, 42s ago',
        'tiny         Pending           1   -                     42s     -                          -',
        'old-run      Completed         1   -                     3d4h    -                          -',
        '',
      ].join('\n'),
    );
  });

  it('says so when there are no runs', () => {
    expect(renderStatusTable([], { now })).toBe('No runs found.\n');
  });

  it('keeps columns aligned when phases are colored', () => {
    const runs = [quickstart, statusFixture('b', { phase: 'Failed' })];
    const colored = renderStatusTable(runs, { now, colors: createColors(true) });
    expect(colored).toContain('\x1b[36mTraining\x1b[39m');
    expect(colored).toContain('\x1b[31mFailed\x1b[39m');
    expect(stripAnsi(colored)).toBe(renderStatusTable(runs, { now }));
  });
});

describe('renderDescribe', () => {
  it('renders the summary, spec, conditions, instance history with cost, and events', () => {
    const events = [
      eventFixture('quickstart', 1),
      eventFixture('quickstart', 2, { kind: 'effect', action: 'launch', message: 'launched i-0aaa', requestId: 'req-1' }),
      eventFixture('quickstart', 3, { kind: 'error', action: 'observe', result: 'error', message: 'Throttling\nretry in 2s' }),
      eventFixture('quickstart', 4, { kind: 'observation', action: 'heartbeat', result: undefined }),
    ];
    const text = renderDescribe({
      status: quickstart,
      events,
      spec: [
        ['Provider', 'aws'],
        ['Instance types', 'g5.xlarge, g6.xlarge'],
        ['Run', 'python train.py'],
      ],
      now,
    });
    expect(text).toBe(
      [
        'Name:            quickstart',
        'UID:             6f1c2d3e-4a5b-4c6d-8e7f-901a2b3c4d5e',
        'Phase:           Training',
        'Generation:      1 (observed 1, spec abc123)',
        'Attempt:         2 (1 interruption, 0 error retries)',
        'Age:             3m12s',
        'Progress:        [###-------] 120/400  loss 0.3123',
        'Metrics:         learning_rate 0.0003  epoch 1.5',
        'Last checkpoint: 000004 at step 100 (42s ago, 2 files, 2.0 KiB)',
        'Cost:            $0.0042 ($0.01 less than on-demand); one attempt not priced (see Timeline)',
        'Source:          runs/quickstart.yaml @ abc1234',
        '',
        'Spec:',
        '  Provider:       aws',
        '  Instance types: g5.xlarge, g6.xlarge',
        '  Run:            python train.py',
        '',
        'Conditions:',
        '  TYPE          STATUS   REASON     AGE     MESSAGE',
        '  Ready         True     Training   1m32s   training step 120',
        '  Interrupted   False    Resumed    2m02s   resumed from 000002 (+1 more lines)',
        '',
        'Checkpoints:',
        '  ID          STEP   STEP FROM        SIZE   FILES   UPLOADED   REUSED   AGE',
        '  000003   unknown   -             2.0 KiB       2          2        0   1m12s ago',
        '  000004       100   huggingface   2.0 KiB       2          1        1   42s ago',
        '',
        'Instances:',
        '  ATTEMPT   GEN   INSTANCE   TYPE        MARKET   ZONE         LAUNCHED               RAN               END REASON             COST   CODE',
        '        1     1   i-0aaa     g5.xlarge   spot     us-east-1a   2026-01-01T12:00:00Z   1m00s             spot interruption   $0.0031   3f9a0c1d2e4b',
        '        2     1   i-0bbb     g6.xlarge   spot     us-east-1b   2026-01-01T12:01:10Z   2m02s (running)   -                   $0.0011   3f9a0c1d2e4b',
        '  Total cost: $0.0042',
        '',
        'Timeline:',
        '  ATTEMPT   GEN   CAPACITY                    LAUNCHED               READY   TRAINING                       NOTICED   FINAL CKPT   ENDED         PRICE      COST   SAVED',
        '        1     1   spot g5.xlarge us-east-1a   2026-01-01T12:00:00Z   +8.0s   +30.0s (cache rebuilt 20.0s)   +50.0s    +55.0s       +1m00s    $0.1860/h   $0.0031   $0.01',
        '        2     1   spot g6.xlarge us-east-1b   2026-01-01T12:01:10Z   +8.0s   +14.0s (cache restored 2.5s)   -         -            running           -   unknown       -',
        '  Total: $0.0031 counted, some costs unknown, $0.01 saved against on-demand ($0.02)',
        '  unknown cost: attempt 2: i-0bbb: pricing:GetProducts was denied',
        '',
        '  Interruptions:',
        '    ATTEMPT   NOTICED                TO TRAINING   STEPS REDONE   LEGS (from the notice)',
        '    1 -> 2    2026-01-01T12:00:50Z         34.0s              4   final checkpoint 5.0s, launch 20.0s, boot 8.0s, sync 1.0s, setup+restore 5.0s',
        '',
        'Events:',
        '  TIME                   KIND          ACTION                    RESULT   MESSAGE',
        '  2026-01-01T12:00:01Z   transition    Pending -> Provisioning   ok       -',
        '  2026-01-01T12:00:02Z   effect        launch                    ok       launched i-0aaa (request req-1)',
        '  2026-01-01T12:00:03Z   error         observe                   error    Throttling (+1 more lines)',
        '  2026-01-01T12:00:04Z   observation   heartbeat                 -        -',
        '',
      ].join('\n'),
    );
  });

  it('shows a failure in full, says <none> for empty sections, and limits events when asked', () => {
    const failed = statusFixture('broken', {
      phase: 'Failed',
      errorRetries: 1,
      failure: { reason: 'JobFailed', message: 'job exited with code 1; last lines:\nTraceback (most recent call last):\nValueError: bad\n' },
    });
    const events = [1, 2, 3, 4, 5].map((n) => eventFixture('broken', n));
    expect(renderDescribe({ status: failed, events, now, maxEvents: 2 })).toBe(
      [
        'Name:       broken',
        'UID:        6f1c2d3e-4a5b-4c6d-8e7f-901a2b3c4d5e',
        'Phase:      Failed',
        'Generation: 1 (observed 1, spec abc123)',
        'Attempt:    1 (0 interruptions, 1 error retry)',
        'Age:        3m12s',
        'Cost:       $0.00',
        'Failure:',
        '  job exited with code 1; last lines:',
        '  Traceback (most recent call last):',
        '  ValueError: bad',
        '',
        'Conditions:',
        '  <none>',
        '',
        'Checkpoints:',
        '  <none>',
        '',
        'Instances:',
        '  <none>',
        '',
        'Timeline:',
        '  <none>',
        '',
        'Events:',
        '  (3 older events not shown)',
        '  TIME                   KIND         ACTION                    RESULT   MESSAGE',
        '  2026-01-01T12:00:04Z   transition   Pending -> Provisioning   ok       -',
        '  2026-01-01T12:00:05Z   transition   Pending -> Provisioning   ok       -',
        '',
      ].join('\n'),
    );
  });

  it('never passes escape sequences from job output or messages to the terminal', () => {
    const hostile = statusFixture('r', {
      failure: { reason: 'JobFailed', message: 'boom\x1b]0;owned\x07\x1b[2J' },
      conditions: [{ type: 'Ready', status: 'False', reason: 'JobFailed', message: '\x1b[31mred\x1b[0m', lastTransitionTime: at(0) }],
    });
    const text = renderDescribe({ status: hostile, events: [eventFixture('r', 1, { message: 'x\x1b[1A\x1b[2Ky' })], now });
    expect(text).not.toMatch(/\x1b/);
    expect(text).toContain('  boom\n');
    expect(text).toContain('   red\n');
    expect(text).toContain('ok       xy\n');
  });
});
