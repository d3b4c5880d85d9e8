// The cost ledger on moto with the fleet simulator (issue 12, acceptance 2): each attempt priced
// from the recorded GetProducts and DescribeSpotPriceHistory answers (test/fixtures/pricing/),
// the spot price integrated over the instance's life rather than frozen at launch, savings against
// on-demand, and budget.maxCostUSD counting on-demand hours too.
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Controller } from '../../src/reconciler/controller.js';
import type { LoadedRun } from '../../src/spec/types.js';
import type { InstanceRecord, RunEvent, RunStatus } from '../../src/state/types.js';
import { awsSpec, startRig, type AwsRig } from '../providers/aws/harness.js';
import { MemoryStore } from '../support/memory-store.js';
import { testRun } from '../support/runs.js';

const repoRoot = path.resolve('.');
let rig: AwsRig;

beforeAll(async () => {
  rig = await startRig({ bootDelayMs: 200 });
});
afterAll(async () => {
  await rig?.release();
});

function awsRun(name: string, spec: Parameters<typeof awsSpec>[1]): LoadedRun {
  const loaded = testRun(name);
  return { ...loaded, run: { ...loaded.run, spec: awsSpec(rig.bucket, spec) } };
}

/** USD for [from, to] at the fleet's recorded spot steps (each holds until the next), computed here independently. */
function spotCost(steps: { at: Date; usd: number }[], from: number, to: number): number {
  let usd = 0;
  steps.forEach((s, i) => {
    const start = Math.max(from, s.at.getTime());
    const end = Math.min(to, steps[i + 1]?.at.getTime() ?? Infinity);
    if (end > start) usd += ((end - start) / 3_600_000) * s.usd;
  });
  return usd;
}

/** Billed window of an instance: launch to end, EC2's 60-second minimum included. */
function billed(i: InstanceRecord): [number, number] {
  const from = Date.parse(i.launchedAt);
  return [from, Math.max(Date.parse(i.endedAt as string), from + 60_000)];
}

describe('cost ledger on moto + fleet', () => {
  it('prices spot attempts over their life and on-demand ones from the price list; the budget counts on-demand hours', async () => {
    const { provider } = rig.provider({ controller: 'ledger', agentTiming: { heartbeatSeconds: 1, noticePollSeconds: 1 } });
    const store = new MemoryStore();
    const runs = [
      awsRun('spotty', {
        // No setup: the trainer's own vendored math library is enough, and a venv build is not what is measured here.
        code: { path: './examples/tiny-trainer', exclude: ['.venv/**', 'checkpoints/**', 'wheelhouse/**'] },
        env: { PYTHONPATH: 'vendor/tinymath' },
        // Attempt 1 trains until the notice (however slow the machine, the notice lands mid-training);
        // attempt 2 trains 15 steps past the checkpoint it restored, then finishes.
        run:
          'if [ "$RUNCTL_ATTEMPT" = 1 ]; then n=100000; else ' +
          'n=$(( $(ls "$RUNCTL_CHECKPOINT_DIR" | sed -n "s/^ckpt-0*\\([0-9][0-9]*\\)\\.json$/\\1/p" | sort -n | tail -1) + 15 )); fi; ' +
          'exec python3 train.py --steps "$n" --checkpoint-every 5 --step-delay 0.05',
        resources: { instanceTypes: ['g5.xlarge'], market: 'spot' },
        checkpoints: { syncInterval: '1s', gracePeriod: '20s' },
      }),
      // Priced at $1.006/h, its 60-second minimum alone ($0.0168) passes this budget.
      awsRun('ondemand', { run: 'sleep 300', resources: { instanceTypes: ['g6.xlarge', 'g5.xlarge'], market: 'on-demand' }, budget: { maxCostUSD: 0.01 } }),
    ];
    const controller = new Controller({ store, provider: async () => provider, load: async () => ({ runs, diagnostics: [], invalidFiles: [] }), controller: 'ledger', repoRoot, prune: false, ...(process.env.LEDGER_DEBUG ? { onEvent: (e) => console.log(e.at, e.run, e.attempt, e.kind, e.action, e.result ?? '', (e.message ?? '').slice(0, 160)) } : {}) });
    const byName = (run: string) => controller.runs.find((s) => s.run === run) as RunStatus | undefined;
    let repriced = false;
    let noticed = false;
    const watcher = setInterval(() => {
      const s = byName('spotty');
      if (!s || s.phase !== 'Training' || s.attempt !== 1 || !s.progress) return;
      const instance = s.instances.find((i) => i.attempt === 1 && !i.endedAt);
      if (!instance?.zone) return;
      // The spot price moves while attempt 1 runs: its cost must follow, not stay at the launch price.
      if (!repriced) {
        repriced = true;
        rig.fleet.prices.setSpotPrice('g5.xlarge', instance.zone, new Date(), 0.5231);
      }
      if (!noticed && s.progress.step >= 12) {
        noticed = true;
        void rig.fleet.deliverSpotNotice(instance.id);
      }
    }, 100);
    const summary = await controller.runUntilSettled();
    clearInterval(watcher);
    await controller.stop();

    const spotty = summary.statuses.find((s) => s.run === 'spotty') as RunStatus;
    const ondemand = summary.statuses.find((s) => s.run === 'ondemand') as RunStatus;
    expect([spotty.phase, spotty.attempt, spotty.interruptions]).toEqual(['Completed', 2, 1]);
    const ledger = spotty.ledger!;
    expect(ledger.unknown).toEqual([]);
    expect(ledger.attempts.map((a) => [a.attempt, a.market, a.type])).toEqual([
      [1, 'spot', 'g5.xlarge'],
      [2, 'spot', 'g5.xlarge'],
    ]);
    for (const a of ledger.attempts) {
      const record = spotty.instances.find((i) => i.attempt === a.attempt) as InstanceRecord;
      const [from, to] = billed(record);
      const steps = rig.fleet.prices.spotSteps('g5.xlarge', record.zone as string);
      expect(a.costUSD, `attempt ${a.attempt}`).toBeCloseTo(spotCost(steps, from, to), 6);
      expect(a.onDemandUSD).toBeCloseTo(((to - from) / 3_600_000) * 1.006, 6);
      expect(a.savingsUSD).toBeCloseTo((a.onDemandUSD as number) - (a.costUSD as number), 6);
      expect(record.price?.source).toContain('spot price history');
    }
    // Attempt 1 saw the move: the price in force at its end is the new one, not the recorded launch price.
    expect(ledger.attempts[0]?.usdPerHour).toBe(0.5231);
    expect(spotty.costUSD).toBe(ledger.costUSD);
    expect(ledger.savingsUSD).toBeGreaterThan(0);

    // The interruption: recovery seconds are the events' own notice and training-again times, on
    // the instance's clock where the agent reported them (data.agentAt), else when written.
    const events = await store.readEvents('spotty');
    const when = (e: RunEvent | undefined) => (typeof e?.data?.agentAt === 'string' ? e.data.agentAt : e?.at) as string;
    const noticeAt = when(events.find((e) => e.kind === 'transition' && e.data?.event === 'SPOT_NOTICE'));
    const trainingAgain = when(events.find((e) => e.kind === 'transition' && e.data?.event === 'AGENT_TRAINING' && e.attempt === 2));
    const [interruption] = ledger.interruptions;
    expect(interruption).toMatchObject({ attempt: 1, nextAttempt: 2, noticedAt: noticeAt, trainingAgainAt: trainingAgain });
    expect(interruption?.recoverySeconds).toBeCloseTo((Date.parse(trainingAgain) - Date.parse(noticeAt)) / 1000, 3);
    expect(interruption?.stepsRedone).toBeGreaterThanOrEqual(0);
    expect(interruption?.stepsRedone).toBeLessThanOrEqual(5);

    // The price list was asked with the documented filters, and once per type (kept, not re-asked per instance).
    const asked = rig.fleet.prices.getProductsCalls.filter((f) => f.some((x) => x.Field === 'instanceType' && x.Value === 'g5.xlarge'));
    expect(asked).toHaveLength(1);
    expect(Object.fromEntries(asked[0]!.map((f) => [f.Field, f.Value]))).toEqual({
      instanceType: 'g5.xlarge',
      regionCode: 'us-east-1',
      operatingSystem: 'Linux',
      tenancy: 'Shared',
      preInstalledSw: 'NA',
      capacitystatus: 'Used',
    });

    // On-demand hours count against the budget: stopped for it, priced at the list price.
    expect(ondemand.phase).toBe('Failed');
    expect(ondemand.failure?.reason).toBe('BudgetExceeded');
    expect(ondemand.failure?.message).toContain('spec.budget.maxCostUSD ($0.01)');
    const od = ondemand.ledger!.attempts[0]!;
    expect(od.market).toBe('on-demand');
    expect(od.usdPerHour).toBe(0.8048);
    expect(od.savingsUSD).toBeUndefined();
    expect(ondemand.costUSD).toBeGreaterThanOrEqual(0.01);
  }, 300_000);
});
