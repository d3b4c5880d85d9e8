// The ledger with real processes on the local provider (issue 12, acceptance 1): the controller,
// the real agent and the tiny trainer, interrupted once by a spot notice on the sandbox's IMDS.
// The ledger's figures must be the events' own: each moment, the recovery seconds, the steps
// redone (checked against the steps the job printed), and a local run's $0 cost.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { publicStatus } from '../../src/cli/status.js';
import { LOCAL_PRICE_SOURCE } from '../../src/providers/local/index.js';
import { attemptKey } from '../../src/reconciler/reconcile.js';
import type { RunEvent, RunStatus } from '../../src/state/types.js';
import { renderDescribe } from '../../src/ui/describe.js';
import { testRun } from '../support/runs.js';
import { startLocalController } from '../support/local-controller.js';

const repoRoot = path.resolve('.');
const cleanups: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const c of cleanups) await c();
});

/** The first event of a kind for an attempt (transitions matched on their machine event). */
/** When the matching event happened: on the instance's clock when its agent reported it (`data.agentAt`), else when it was written. */
function moment(events: RunEvent[], attempt: number, match: (e: RunEvent) => boolean): string | undefined {
  const e = events.find((x) => Number(x.data?.attempt ?? x.attempt) === attempt && match(x));
  return typeof e?.data?.agentAt === 'string' ? e.data.agentAt : e?.at;
}
const transition = (event: string) => (e: RunEvent) => e.kind === 'transition' && e.data?.event === event;

describe('ledger on the local provider, end to end', () => {
  it('records each attempt\'s moments and each interruption\'s recovery and steps redone exactly as the events and logs show, at $0', async () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'runctl-ledger-'));
    const run = testRun('ledgered', {
      code: { path: './examples/tiny-trainer', exclude: ['.venv/**', 'checkpoints/**', 'wheelhouse/**'] },
      setup: 'bash setup.sh',
      // Attempt 1 trains until the notice (however slow the machine, the notice lands mid-training:
      // a 60-step job could finish before a loaded controller delivered it); attempt 2 trains 15
      // steps past the checkpoint it restored, then finishes.
      run:
        'if [ "$RUNCTL_ATTEMPT" = 1 ]; then n=100000; else ' +
        'n=$(( $(ls "$RUNCTL_CHECKPOINT_DIR" | sed -n "s/^ckpt-0*\\([0-9][0-9]*\\)\\.json$/\\1/p" | sort -n | tail -1) + 15 )); fi; ' +
        'exec .venv/bin/python train.py --steps "$n" --checkpoint-every 10 --step-delay 0.05',
      checkpoints: { syncInterval: '1s', gracePeriod: '10s', keep: 3 },
      timeouts: { provisioning: '1m', installing: '2m', training: '5m' },
    });
    const { provider, store, controller } = await startLocalController({ root, repoRoot, runs: () => [run], cleanups, controller: 'ledger' });
    let delivered = false;
    const timer = setInterval(() => {
      const s = controller.runs.find((r) => r.run === 'ledgered');
      if (delivered || !s || s.phase !== 'Training' || s.attempt !== 1 || (s.progress?.step ?? 0) < 25) return;
      const inst = s.instances.find((i) => i.attempt === 1 && !i.endedAt);
      if (!inst) return;
      delivered = true;
      void provider.deliverSpotNotice(attemptKey(s, s.generation, s.attempt), inst.id);
    }, 50);
    const summary = await controller.runUntilSettled();
    clearInterval(timer);

    const s = summary.statuses[0] as RunStatus;
    expect([s.phase, s.attempt, s.interruptions]).toEqual(['Completed', 2, 1]);
    const events = await store.readEvents('ledgered');
    const ledger = s.ledger!;
    expect(ledger.attempts.map((a) => a.attempt)).toEqual([1, 2]);

    for (const a of ledger.attempts) {
      const record = s.instances.find((i) => i.attempt === a.attempt)!;
      expect(a.launchedAt).toBe(record.launchedAt);
      expect(a.endedAt).toBe(record.endedAt);
      expect(a.readyAt).toBe(moment(events, a.attempt, transition('INSTANCE_READY')));
      expect(a.setupStartedAt).toBe(moment(events, a.attempt, transition('AGENT_INSTALLING')));
      expect(a.firstTrainedAt).toBe(moment(events, a.attempt, transition('AGENT_TRAINING')));
      // A local instance costs nothing, and says so rather than "unknown".
      expect([a.costUSD, a.usdPerHour]).toEqual([0, 0]);
      expect(record.price?.source).toBe(LOCAL_PRICE_SOURCE);
    }
    // The first training is the job's start as the agent recorded it, before the controller saw it.
    for (const a of ledger.attempts) {
      const seen = events.find((e) => Number(e.data?.attempt) === a.attempt && transition('AGENT_TRAINING')(e))!;
      expect(seen.data?.agentAt, `attempt ${a.attempt}'s AGENT_TRAINING carries the job's start`).toBeDefined();
      expect(Date.parse(String(seen.data?.agentAt))).toBeLessThanOrEqual(Date.parse(seen.at));
    }
    const [first] = ledger.attempts;
    expect(first?.noticedAt).toBe(moment(events, 1, transition('SPOT_NOTICE')));
    expect(first?.finalCheckpointAt).toBe(moment(events, 1, (e) => e.action === 'final checkpoint'));
    expect(first?.finalCheckpointSafe).toBe(true);
    expect(ledger.costUSD).toBe(0);
    expect(ledger.unknown).toEqual([]);

    const [interruption] = ledger.interruptions;
    expect(ledger.interruptions).toHaveLength(1);
    expect(interruption?.recoverySeconds).toBeCloseTo((Date.parse(ledger.attempts[1]!.firstTrainedAt!) - Date.parse(first!.noticedAt!)) / 1000, 3);

    // Steps redone, against what the job printed: attempt 2 started right after the restored
    // checkpoint's step, and the ledger counts from there to the last step attempt 1 reported.
    const restored = events.find((e) => e.action === 'restored checkpoint' && e.data?.attempt === 2);
    const restoredStep = restored?.data?.step as number;
    expect(ledger.attempts[1]?.restored).toEqual({ id: restored?.data?.checkpoint, step: restoredStep });
    const printed = (attempt: number) => {
      const dir = path.join(root, 'local', 'storage', 'runs', 'ledgered', s.uid, 'g1', `a${attempt}`, 'logs');
      const text = fs.readdirSync(dir).sort().map((f) => fs.readFileSync(path.join(dir, f), 'utf8')).join('');
      return [...text.matchAll(/step=(\d+)\//g)].map((m) => Number(m[1]));
    };
    expect(Math.min(...printed(2))).toBe(restoredStep + 1);
    const reached = Math.max(first?.stepAtNotice ?? 0, first?.lastStep ?? 0);
    expect(interruption?.stepsRedone).toBe(reached - restoredStep);
    expect(reached).toBeLessThanOrEqual(Math.max(...printed(1)));
    expect(interruption?.stepsRedone).toBeLessThanOrEqual(10);

    // What users read: `status -o json` carries it; `describe` shows it as a table.
    expect(publicStatus(s).ledger).toEqual(ledger);
    const text = renderDescribe({ status: s, events, now: Date.now() });
    expect(text).toMatch(/Timeline:\n {2}ATTEMPT +GEN +CAPACITY/);
    expect(text).toMatch(/\n {8}1 +1 +spot local local .* \$0\/h +\$0\.00/);
    expect(text).toMatch(/Interruptions:\n {4}ATTEMPT +NOTICED +TO TRAINING +STEPS REDONE/);
  }, 120_000);
});
