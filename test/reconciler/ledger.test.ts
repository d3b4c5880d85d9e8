// The ledger's derivation (src/reconciler/ledger.ts, ledger-cost.ts): from an event log shaped as
// the reconciler writes it and the run's instance records, per attempt moments and cost, per
// interruption the time to training again and the steps redone.
import { describe, expect, it } from 'vitest';
import { MIN_BILLED_SECONDS, instanceCost, integratePrice, priceAt } from '../../src/reconciler/ledger-cost.js';
import { buildLedger, timelineFromEvents, timelineOnly } from '../../src/reconciler/ledger.js';
import type { InstanceRecord, RunEvent } from '../../src/state/types.js';

const T0 = Date.parse('2026-03-02T10:00:00.000Z');
const at = (s: number) => new Date(T0 + s * 1000).toISOString();

let seq = 0;
function ev(s: number, attempt: number, kind: RunEvent['kind'], action: string, data: Record<string, unknown> = {}, extra: Partial<RunEvent> = {}): RunEvent {
  seq += 1;
  return { id: `r:${seq}`, seq, at: at(s), run: 'r', generation: 1, attempt, kind, action, data, ...extra };
}
const transition = (s: number, attempt: number, label: string, event: string, data: Record<string, unknown> = {}, message = event) =>
  ev(s, attempt, 'transition', label, { event, generation: 1, attempt, ...data }, { message });

/** Two attempts: the first noticed at 400 s (step 120), its final checkpoint (step 120) safe at 430 s; the second restores step 120. */
function interruptedRun(): RunEvent[] {
  return [
    ev(0, 0, 'spec', 'created'),
    transition(0, 1, 'Pending -> Provisioning', 'START'),
    ev(1, 0, 'effect', 'launch', { instanceId: 'i-1', generation: 1, attempt: 1 }, { result: 'ok' }),
    transition(60, 1, 'Provisioning -> Syncing', 'INSTANCE_READY'),
    transition(70, 1, 'Syncing -> Installing', 'AGENT_INSTALLING'),
    ev(250, 1, 'observation', 'setup rebuilt', { generation: 1, attempt: 1, cache: 'rebuilt', seconds: 180 }),
    transition(250, 1, 'Installing -> Training', 'AGENT_TRAINING'),
    transition(400, 1, 'Training -> Interrupted', 'SPOT_NOTICE', { step: 118 }, 'Server.SpotInstanceTermination'),
    // Written while the status already names the next attempt (prelaunch): data says whose it is.
    ev(430, 2, 'observation', 'final checkpoint', { safe: true, generation: 1, attempt: 1, checkpoint: '00000012', checkpointStep: 120, lastStep: 120 }, { result: 'ok' }),
    // Leaving Resuming: the old instance is released; the transition already names attempt 2.
    transition(404, 2, 'Resuming -> Provisioning', 'INSTANCE_GONE', {}, 'released'),
    ev(405, 1, 'effect', 'launch', { instanceId: 'i-2', generation: 1, attempt: 2 }, { result: 'ok' }),
    transition(465, 2, 'Provisioning -> Syncing', 'INSTANCE_READY'),
    transition(475, 2, 'Syncing -> Installing', 'AGENT_INSTALLING'),
    ev(480, 2, 'observation', 'setup restored', { generation: 1, attempt: 2, cache: 'restored', seconds: 5, savedSeconds: 175 }),
    ev(482, 2, 'observation', 'restored checkpoint', { generation: 1, attempt: 2, checkpoint: '00000012', step: 120 }),
    transition(490, 2, 'Installing -> Training', 'AGENT_TRAINING'),
    transition(900, 2, 'Training -> Completed', 'JOB_SUCCEEDED'),
  ];
}

function instances(): InstanceRecord[] {
  return [
    {
      id: 'i-1',
      type: 'g5.xlarge',
      zone: 'us-east-1a',
      market: 'spot',
      launchedAt: at(1),
      endedAt: at(440),
      generation: 1,
      attempt: 1,
      price: {
        // The price in force at launch was set before it; it moves once during the attempt.
        steps: [
          { from: at(-5000), usdPerHour: 0.36 },
          { from: at(301), usdPerHour: 0.72 },
        ],
        onDemandUSDPerHour: 1.006,
        source: 'test',
        fetchedAt: at(441),
      },
    },
    {
      id: 'i-2',
      type: 'g5.xlarge',
      market: 'on-demand',
      launchedAt: at(405),
      endedAt: at(901),
      generation: 1,
      attempt: 2,
      price: { steps: [{ from: at(405), usdPerHour: 1.006 }], onDemandUSDPerHour: 1.006, source: 'test', fetchedAt: at(902) },
    },
  ];
}

describe('ledger cost', () => {
  it('integrates a stepped price over an interval, each step holding until the next', () => {
    const steps = [
      { from: at(0), usdPerHour: 1 },
      { from: at(1800), usdPerHour: 3 },
    ];
    expect(integratePrice(steps, T0, T0 + 3600_000)).toBeCloseTo(0.5 + 1.5, 10);
    expect(integratePrice(steps, T0 + 1800_000, T0 + 5400_000)).toBeCloseTo(3, 10);
    expect(priceAt(steps, T0 + 1799_000)).toBe(1);
    expect(priceAt(steps, T0 + 1800_000)).toBe(3);
  });

  it('never guesses: no step at or before the start is an unknown cost, with the reason', () => {
    expect(integratePrice([{ from: at(10), usdPerHour: 1 }], T0, T0 + 60_000)).toBeUndefined();
    const record: InstanceRecord = {
      id: 'i-x',
      launchedAt: at(0),
      endedAt: at(600),
      generation: 1,
      attempt: 1,
      price: { unknown: 'pricing:GetProducts was denied', source: 'aws', fetchedAt: at(601) },
    };
    expect(instanceCost(record, T0 + 700_000)).toMatchObject({ unknown: 'pricing:GetProducts was denied' });
    expect(instanceCost(record, T0 + 700_000).costUSD).toBeUndefined();
    const unpriced = instanceCost({ ...record, price: undefined }, T0);
    expect(unpriced.costUSD).toBeUndefined();
    expect(unpriced.unknown).toContain('not been read');
  });

  it('bills at least EC2\'s 60-second minimum', () => {
    const record: InstanceRecord = { id: 'i-y', launchedAt: at(0), endedAt: at(5), generation: 1, attempt: 1, price: { steps: [{ from: at(0), usdPerHour: 3.6 }], source: 't', fetchedAt: at(5) } };
    const cost = instanceCost(record, T0 + 10_000);
    expect(cost.seconds).toBe(MIN_BILLED_SECONDS);
    expect(cost.costUSD).toBeCloseTo(0.06, 9);
  });

  it('keeps a record written before the ledger priced at its launch price', () => {
    const legacy: InstanceRecord = { id: 'i-z', launchedAt: at(0), endedAt: at(3600), pricePerHour: 0.5, generation: 1, attempt: 1 };
    expect(instanceCost(legacy, T0).costUSD).toBeCloseTo(0.5, 9);
  });
});

describe('ledger timeline', () => {
  it('derives each attempt\'s moments from the events, matching transitions by machine event and attempt', () => {
    const timeline = timelineFromEvents(interruptedRun());
    expect(timeline).toHaveLength(2);
    expect(timeline[0]).toMatchObject({
      attempt: 1,
      instanceId: 'i-1',
      launchedAt: at(1),
      readyAt: at(60),
      setupStartedAt: at(70),
      setup: { cache: 'rebuilt', seconds: 180 },
      firstTrainedAt: at(250),
      noticedAt: at(400),
      noticeReason: 'Server.SpotInstanceTermination',
      stepAtNotice: 118,
      lastStep: 120,
      finalCheckpointAt: at(430),
      finalCheckpointSafe: true,
    });
    expect(timeline[1]).toMatchObject({ attempt: 2, launchedAt: at(405), setup: { cache: 'restored', seconds: 5, savedSeconds: 175 }, restored: { id: '00000012', step: 120 }, firstTrainedAt: at(490) });
    expect(timeline[1]?.noticedAt).toBeUndefined();
  });

  it('gives per interruption the seconds from notice to training again, each leg, and the steps redone', () => {
    const ledger = buildLedger(timelineFromEvents(interruptedRun()), instances(), T0 + 1000_000);
    expect(ledger.interruptions).toEqual([
      {
        generation: 1,
        attempt: 1,
        nextAttempt: 2,
        noticedAt: at(400),
        reason: 'Server.SpotInstanceTermination',
        trainingAgainAt: at(490),
        recoverySeconds: 90,
        // Last step 120, restored checkpoint at 120: nothing redone.
        stepsRedone: 0,
        legs: { finalCheckpoint: 30, launch: 5, boot: 60, sync: 10, setup: 15 },
      },
    ]);
    expect(ledger.recoverySeconds).toBe(90);
  });

  it("dates a notice and the first training by the agent's own moments when its report caused them", () => {
    // The agent began stopping the job at 397 s and started attempt 2's job at 484 s; the
    // controller saw each a poll later (400 s, 490 s). The agent's moments are the ones measured.
    const events = interruptedRun().map((e) => {
      if (e.data?.event === 'SPOT_NOTICE') return { ...e, data: { ...e.data, agentAt: at(397) } };
      if (e.data?.event === 'AGENT_TRAINING' && e.attempt === 2) return { ...e, data: { ...e.data, agentAt: at(484) } };
      return e;
    });
    const ledger = buildLedger(timelineFromEvents(events), instances(), T0 + 1000_000);
    expect(ledger.interruptions[0]).toMatchObject({ noticedAt: at(397), trainingAgainAt: at(484), recoverySeconds: 87 });
    expect(ledger.attempts.find((a) => a.attempt === 2)?.firstTrainedAt).toBe(at(484));
    // A malformed moment is not trusted: the transition's own time stands.
    const bad = interruptedRun().map((e) => (e.data?.event === 'AGENT_TRAINING' && e.attempt === 2 ? { ...e, data: { ...e.data, agentAt: 'soon' } } : e));
    expect(buildLedger(timelineFromEvents(bad), instances(), T0 + 1000_000).interruptions[0]?.trainingAgainAt).toBe(at(490));
  });

  it("takes the first training from the job's end when no look saw the job training", () => {
    // Attempt 2's job started at 484 s and finished before the next poll: the reconciler went
    // Installing -> Completed on JOB_SUCCEEDED, and only that transition carries the job's start.
    const events = interruptedRun()
      .filter((e) => !(e.data?.event === 'AGENT_TRAINING' && e.attempt === 2))
      .map((e) => (e.data?.event === 'JOB_SUCCEEDED' ? { ...e, data: { ...e.data, jobStartedAt: at(484) } } : e));
    const ledger = buildLedger(timelineFromEvents(events), instances(), T0 + 1000_000);
    expect(ledger.attempts.find((a) => a.attempt === 2)?.firstTrainedAt).toBe(at(484));
    expect(ledger.interruptions[0]).toMatchObject({ trainingAgainAt: at(484), recoverySeconds: 84 });
    // A transition that saw the job training keeps its own moment: the end's does not replace it.
    const both = interruptedRun().map((e) => (e.data?.event === 'JOB_SUCCEEDED' ? { ...e, data: { ...e.data, jobStartedAt: at(300) } } : e));
    expect(buildLedger(timelineFromEvents(both), instances(), T0 + 1000_000).interruptions[0]?.trainingAgainAt).toBe(at(490));
  });

  it('counts the steps between the last step reached and the checkpoint restored as redone', () => {
    const events = interruptedRun().map((e) => (e.action === 'restored checkpoint' ? { ...e, data: { ...e.data, checkpoint: '00000011', step: 110 } } : e));
    const ledger = buildLedger(timelineFromEvents(events), instances(), T0 + 1000_000);
    expect(ledger.interruptions[0]?.stepsRedone).toBe(10);
    expect(ledger.stepsRedone).toBe(10);
  });

  it('costs each attempt at its real prices, spot stepped, and says what spot saved against on-demand', () => {
    const ledger = buildLedger(timelineFromEvents(interruptedRun()), instances(), T0 + 1000_000);
    const [a1, a2] = ledger.attempts;
    // Attempt 1: 1 s..301 s at $0.36/h, 301 s..440 s at $0.72/h.
    const spot = (300 / 3600) * 0.36 + (139 / 3600) * 0.72;
    expect(a1?.costUSD).toBeCloseTo(spot, 6);
    expect(a1?.onDemandUSD).toBeCloseTo((439 / 3600) * 1.006, 6);
    expect(a1?.savingsUSD).toBeCloseTo((439 / 3600) * 1.006 - spot, 5);
    expect(a1?.seconds).toBe(439);
    // Attempt 2 ran on-demand: no savings claimed.
    expect(a2?.costUSD).toBeCloseTo((496 / 3600) * 1.006, 6);
    expect(a2?.savingsUSD).toBeUndefined();
    expect(ledger.costUSD).toBeCloseTo((a1?.costUSD ?? 0) + (a2?.costUSD ?? 0), 6);
    expect(ledger.unknown).toEqual([]);
  });

  it('lists an attempt whose price is unknown instead of counting it as free', () => {
    const recs = instances();
    recs[1] = { ...recs[1]!, price: { unknown: 'GetProducts has no Linux price for g5.xlarge in us-east-1', source: 'aws', fetchedAt: at(902) } };
    const ledger = buildLedger(timelineFromEvents(interruptedRun()), recs, T0 + 1000_000);
    expect(ledger.attempts[1]?.costUSD).toBeUndefined();
    expect(ledger.unknown).toEqual(['attempt 2: i-2: GetProducts has no Linux price for g5.xlarge in us-east-1']);
    expect(ledger.costUSD).toBeCloseTo(ledger.attempts[0]?.costUSD ?? NaN, 9);
  });

  it('re-costs from a previous ledger\'s attempts without the event log, and a live attempt grows with the clock', () => {
    const recs = instances();
    recs[1] = { ...recs[1]!, endedAt: undefined };
    const first = buildLedger(timelineFromEvents(interruptedRun()), recs, T0 + 1000_000);
    const later = buildLedger(first.attempts.map(timelineOnly), recs, T0 + 1360_000);
    expect(later.attempts.map(timelineOnly)).toEqual(first.attempts.map(timelineOnly));
    expect((later.attempts[1]?.costUSD ?? 0) - (first.attempts[1]?.costUSD ?? 0)).toBeCloseTo(0.1006, 6);
    expect(later.attempts[1]?.seconds).toBeUndefined();
  });

  it('an attempt restored from nothing redoes every step it had reached', () => {
    const events = interruptedRun().filter((e) => e.action !== 'restored checkpoint');
    expect(buildLedger(timelineFromEvents(events), instances(), T0 + 1000_000).interruptions[0]?.stepsRedone).toBe(120);
  });
});
