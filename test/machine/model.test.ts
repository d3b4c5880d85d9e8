// Model-based tests of the run machine with xstate/graph: the whole reachable state space under a
// bounded configuration is enumerated and checked for reachability, termination and handling of
// interruptions and deletions.
import { describe, expect, it } from 'vitest';
import { transition } from 'xstate';
import { getAdjacencyMap, getShortestPaths } from 'xstate/graph';
import { EFFECT_TYPES, type Limits, type RunEvent } from '../../src/machine/events.js';
import { runMachine } from '../../src/machine/run-machine.js';
import { phaseOf, type RunSnapshot } from '../../src/machine/snapshot.js';

const limits: Limits = {
  maxInterruptions: 1,
  maxRetriesOnError: 1,
  provisioningMs: 1000,
  installingMs: 1000,
  trainingMs: 1000,
  stopGraceMs: 1000,
  text: { provisioning: '1s', installing: '1s', training: '1s' },
};
const input = { run: 'model', generation: 1, limits };

// Ordinary events happen "now" (t=0); TICK comes far in the future so every deadline has passed.
const LATER = 10 ** 12;
const ENVIRONMENT: RunEvent[] = [
  { type: 'START', at: 0 },
  { type: 'TICK', at: LATER },
  { type: 'INSTANCE_READY', at: 0 },
  { type: 'AGENT_INSTALLING', at: 0 },
  { type: 'AGENT_TRAINING', at: 0 },
  { type: 'JOB_SUCCEEDED', at: 0 },
  { type: 'JOB_FAILED', message: 'exit 1', at: 0 },
  { type: 'SPOT_NOTICE', reason: 'spot', at: 0 },
  // spec.recovery.prelaunch (issue 12): the notice launches the next attempt's capacity at once.
  { type: 'SPOT_NOTICE', reason: 'spot', prelaunch: true, at: 0 },
  { type: 'REBALANCE_RECOMMENDED', at: 0 },
  { type: 'REPLACEMENT_READY', at: 0 },
  { type: 'HANDOVER', at: 0 },
  { type: 'AGENT_STOPPED', at: 0 },
  { type: 'INSTANCE_GONE', spot: true, reason: 'gone', at: 0 },
  { type: 'REDEPLOY', at: 0 },
  { type: 'REHEARSE', at: 0 },
  { type: 'RETRY_LAUNCH', at: 0 },
  { type: 'FATAL', reason: 'LaunchFailed', message: 'denied', at: 0 },
];
// What people do: bounded to one of each kind by the serialization below.
const USER: RunEvent[] = [
  { type: 'SUSPEND', at: 0 },
  { type: 'RESUME', at: 0 },
  { type: 'DELETE', at: 0 },
  { type: 'NEW_GENERATION', generation: 2, at: 0 },
  { type: 'BUDGET_EXCEEDED', message: 'over budget', at: 0 },
];
const USER_TYPES = new Set(USER.map((e) => e.type));

const TERMINAL = new Set(['Completed', 'Failed', 'Suspended', 'Deleted']);
const ALL_PHASES = [
  'Pending',
  'Provisioning',
  'Syncing',
  'Installing',
  'Training',
  'Completed',
  'Interrupted',
  'Resuming',
  'Failed',
  'Suspended',
  'Terminating',
  'Deleted',
];

// Counters matter only relative to their limits (the guards compare against them), so they are
// capped: suspend/resume cycles could otherwise grow them without bound.
function serialize(s: RunSnapshot): string {
  const c = s.context;
  return JSON.stringify({
    v: s.value,
    i: Math.min(c.interruptions, limits.maxInterruptions + 1),
    r: Math.min(c.errorRetries, limits.maxRetriesOnError + 1),
    g: c.generation,
    p: c.pendingGeneration,
    stop: c.stopReason,
    reh: c.rehearsalDone,
    late: c.deadline ? c.deadline.at >= LATER : undefined,
    // The replacement, relative to the attempt (always the next one), and the handover facts.
    rep: c.replacement === undefined ? undefined : c.replacement - c.attempt,
    dep: c.replacementDeployed,
    stopped: c.previousStopped,
    skip: c.skipAttempt === undefined ? undefined : c.skipAttempt - c.attempt,
  });
}

const adjacency = getAdjacencyMap(runMachine, {
  input,
  events: [...ENVIRONMENT, ...USER],
  serializeState: (s) => serialize(s as RunSnapshot) as never,
  limit: 1_000_000,
});
const states = Object.values(adjacency).map((a) => a.state as RunSnapshot);

// Every test walks the same states and events: each transition is computed once.
const transitions = new Map<string, ReturnType<typeof transition<typeof runMachine>>>();
function step(s: RunSnapshot, e: RunEvent) {
  const key = `${serialize(s)}|${JSON.stringify(e)}`;
  let t = transitions.get(key);
  if (!t) transitions.set(key, (t = transition(runMachine, s, e)));
  return t;
}

function next(s: RunSnapshot, e: RunEvent): RunSnapshot {
  return step(s, e)[0];
}

describe('run machine (model-based)', () => {
  it('reaches every phase from Pending', () => {
    const reached = new Set(states.map((s) => phaseOf(s.value)));
    expect([...reached].sort()).toEqual([...ALL_PHASES].sort());
    // And xstate/graph finds a concrete shortest path to each one (one traversal for all of them).
    const paths = getShortestPaths(runMachine, {
      input,
      events: [...ENVIRONMENT, ...USER],
      serializeState: (s) => serialize(s as RunSnapshot) as never,
    });
    for (const phase of ALL_PHASES) {
      expect(paths.some((p) => phaseOf((p.state as RunSnapshot).value) === phase), `no path to ${phase}`).toBe(true);
    }
  });

  it('has no cycle driven by the environment alone: every such path is bounded', () => {
    // Depth-first search over environment edges; a back edge would be an unbounded loop.
    const colour = new Map<string, 'grey' | 'black'>();
    const visit = (s: RunSnapshot, path: string[]): void => {
      const key = serialize(s);
      colour.set(key, 'grey');
      for (const e of ENVIRONMENT) {
        const n = next(s, e);
        const nk = serialize(n);
        if (nk === key) continue; // ignored or self-transition (e.g. REDEPLOY)
        const c = colour.get(nk);
        if (c === 'grey') throw new Error(`cycle: ${[...path, e.type].join(' -> ')}`);
        if (!c) visit(n, [...path, e.type]);
      }
      colour.set(key, 'black');
    };
    for (const s of states) if (!colour.has(serialize(s))) visit(s, [phaseOf(s.value)]);
  });

  it('ends every environment-driven path in Completed, Failed, Suspended or Deleted', () => {
    // The reachable set is closed under environment events, so checking each state's own moves
    // covers the end of every path. With no cycles (previous test), every path ends somewhere.
    for (const s of states) {
      const moves = ENVIRONMENT.filter((e) => serialize(next(s, e)) !== serialize(s));
      if (moves.length === 0) {
        expect(TERMINAL.has(phaseOf(s.value)), `stuck in ${JSON.stringify(s.value)}`).toBe(true);
      }
    }
  });

  it('never ignores an interruption while an instance may be alive', () => {
    const withInstance = ['Provisioning', 'Syncing', 'Installing', 'Training'];
    for (const s of states) {
      const phase = phaseOf(s.value);
      if (withInstance.includes(phase)) {
        expect(phaseOf(next(s, { type: 'SPOT_NOTICE', reason: 'spot', at: 0 }).value)).toBe('Interrupted');
        expect(phaseOf(next(s, { type: 'INSTANCE_GONE', spot: false, reason: 'x', at: 0 }).value)).toBe('Interrupted');
      }
      if (['Interrupted', 'Resuming', 'Terminating'].includes(phase)) {
        // The instance going away always moves the run on.
        const after = next(s, { type: 'INSTANCE_GONE', spot: true, reason: 'gone', at: 0 });
        expect(serialize(after), `INSTANCE_GONE ignored in ${JSON.stringify(s.value)}`).not.toBe(serialize(s));
      }
    }
  });

  it('never ignores a deletion: from every state, DELETE leads to Deleted without further user action', () => {
    // The states from which Deleted is reachable by environment events alone, found once by walking
    // the environment edges backwards from Deleted (the reachable set is closed under every event).
    const reverse = new Map<string, string[]>();
    for (const s of states) {
      const from = serialize(s);
      for (const e of ENVIRONMENT) {
        const to = serialize(next(s, e));
        if (!reverse.has(to)) reverse.set(to, []);
        reverse.get(to)!.push(from);
      }
    }
    const canDelete = new Set(states.filter((s) => phaseOf(s.value) === 'Deleted').map(serialize));
    const queue = [...canDelete];
    for (let k = queue.shift(); k !== undefined; k = queue.shift()) {
      for (const from of reverse.get(k) ?? []) if (!canDelete.has(from)) canDelete.add(from), queue.push(from);
    }
    for (const s of states) {
      if (phaseOf(s.value) === 'Deleted') continue;
      const after = next(s, { type: 'DELETE', at: 0 });
      const alreadyDeleting = phaseOf(s.value) === 'Terminating' && s.context.stopReason === 'delete';
      if (!alreadyDeleting) {
        expect(serialize(after), `DELETE ignored in ${JSON.stringify(s.value)}`).not.toBe(serialize(s));
      }
      expect(canDelete.has(serialize(after)), `Deleted unreachable after DELETE in ${JSON.stringify(s.value)}`).toBe(true);
    }
  });

  it('asks for the right effects: launch on every attempt, terminate before new capacity and at the end', () => {
    const actionsOf = (s: RunSnapshot, e: RunEvent) => step(s, e)[1].map((a) => a.type);
    const pending = states.find((s) => phaseOf(s.value) === 'Pending')!;
    expect(actionsOf(pending, { type: 'START', at: 0 })).toContain('launch');
    for (const s of states) {
      const phase = phaseOf(s.value);
      if (phase === 'Training') {
        expect(actionsOf(s, { type: 'JOB_SUCCEEDED', at: 0 })).toContain('terminate');
      }
      if (phase === 'Resuming') {
        expect(actionsOf(s, { type: 'INSTANCE_GONE', spot: false, reason: 'x', at: 0 })).toContain('launch');
      }
    }
    expect(USER_TYPES.size).toBe(USER.length);
  });

  describe('a replacement launched during the notice (recovery.prelaunch)', () => {
    const effectsOf = (s: RunSnapshot, e: RunEvent) =>
      step(s, e)[1].filter((a) => (EFFECT_TYPES as readonly string[]).includes(a.type)) as { type: string; params?: Record<string, unknown> }[];

    it('hands over: the notice launches attempt 2 at once, its agent waits, and its job starts once attempt 1 stopped', () => {
      const story: RunEvent[] = [
        { type: 'START', at: 0 },
        { type: 'INSTANCE_READY', at: 0 },
        { type: 'AGENT_TRAINING', at: 0 },
        { type: 'SPOT_NOTICE', reason: 'spot', prelaunch: true, at: 0 },
        { type: 'REPLACEMENT_READY', at: 0 },
        { type: 'HANDOVER', at: 0 }, // ignored: attempt 1 has not stopped yet
        { type: 'AGENT_STOPPED', at: 0 },
        { type: 'HANDOVER', at: 0 },
        { type: 'INSTANCE_READY', at: 0 },
        { type: 'AGENT_TRAINING', at: 0 },
      ];
      let s = states[0] as RunSnapshot;
      const log: string[] = [];
      for (const e of story) {
        const effects = effectsOf(s, e).map((a) => `${a.type}${a.params && 'attempt' in a.params ? `(${String(a.params.attempt)})` : ''}`);
        s = next(s, e);
        log.push(`${e.type} -> ${phaseOf(s.value)}#${s.context.attempt}${effects.length ? ` / ${effects.join(', ')}` : ''}`);
      }
      expect(log).toEqual([
        'START -> Provisioning#1 / launch',
        'INSTANCE_READY -> Syncing#1 / deployAgent',
        'AGENT_TRAINING -> Training#1',
        'SPOT_NOTICE -> Interrupted#1 / prelaunch(2)',
        'REPLACEMENT_READY -> Interrupted#1 / deployReplacement(2)',
        'HANDOVER -> Interrupted#1',
        'AGENT_STOPPED -> Resuming#1 / terminate',
        'HANDOVER -> Provisioning#2 / openStartGate(2), launch',
        'INSTANCE_READY -> Syncing#2 / deployAgent',
        'AGENT_TRAINING -> Training#2',
      ]);
    });

    it('never a second replacement, never two jobs, never the replacement terminated with the old instance', () => {
      let prelaunched = 0;
      let opened = 0;
      for (const s of states) {
        const phase = phaseOf(s.value);
        for (const e of [...ENVIRONMENT, ...USER]) {
          const effects = effectsOf(s, e);
          if (effects.length === 0) continue;
          const where = `${e.type}${e.type === 'SPOT_NOTICE' && e.prelaunch ? '(prelaunch)' : ''} in ${JSON.stringify(s.value)}`;
          const after = next(s, e);
          for (const a of effects) {
            if (a.type === 'prelaunch') {
              prelaunched++;
              expect(s.context.replacement, `second replacement on ${where}`).toBeUndefined();
              expect(a.params, where).toEqual({ attempt: s.context.attempt + 1 });
            }
            if (a.type === 'openStartGate') {
              opened++;
              // Only from Resuming (the old instance's terminate asked for on entering it), and only
              // once the old job is known to have stopped, or its instance is gone.
              expect(phase, where).toBe('Resuming');
              expect((e.type === 'HANDOVER' && s.context.previousStopped === true) || e.type === 'INSTANCE_GONE', where).toBe(true);
              expect(a.params, where).toEqual({ attempt: s.context.replacement });
              // The replacement becomes the attempt: Provisioning adopts it under its own launch key.
              expect([phaseOf(after.value), after.context.attempt], where).toEqual(['Provisioning', s.context.replacement]);
            }
            if (a.type === 'terminate') {
              const spare = a.params?.spare;
              if (phaseOf(after.value) === 'Resuming') expect(spare, where).toBe(after.context.replacement);
              else expect(spare, where).toBeUndefined(); // Completed, Failed, Releasing: everything goes
            }
          }
        }
        // A passed stop deadline proves nothing about the old job: no handover on it.
        if (phase === 'Resuming' && !s.context.previousStopped) expect(serialize(next(s, { type: 'HANDOVER', at: 0 }))).toBe(serialize(s));
        // An abandoned replacement's attempt number is never launched again (its instance is gone).
        if (s.context.skipAttempt !== undefined && phase === 'Suspended') {
          expect(next(s, { type: 'RESUME', at: 0 }).context.attempt).toBeGreaterThan(s.context.skipAttempt);
        }
      }
      expect(prelaunched).toBeGreaterThan(0);
      expect(opened).toBeGreaterThan(0);
    });
  });
});
