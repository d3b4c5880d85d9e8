// Model-based tests of the run machine with xstate/graph: the whole reachable state space under a
// bounded configuration is enumerated and checked for reachability, termination and handling of
// interruptions and deletions.
import { describe, expect, it } from 'vitest';
import { transition } from 'xstate';
import { getAdjacencyMap, getShortestPaths } from 'xstate/graph';
import type { Limits, RunEvent } from '../../src/machine/events.js';
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
  });
}

const adjacency = getAdjacencyMap(runMachine, {
  input,
  events: [...ENVIRONMENT, ...USER],
  serializeState: (s) => serialize(s as RunSnapshot) as never,
  limit: 1_000_000,
});
const states = Object.values(adjacency).map((a) => a.state as RunSnapshot);

function next(s: RunSnapshot, e: RunEvent): RunSnapshot {
  return transition(runMachine, s, e)[0];
}

/** States reachable from `s` using only environment events (no people involved). */
function environmentClosure(s: RunSnapshot): RunSnapshot[] {
  const seen = new Map<string, RunSnapshot>([[serialize(s), s]]);
  const stack = [s];
  while (stack.length) {
    const cur = stack.pop() as RunSnapshot;
    for (const e of ENVIRONMENT) {
      const n = next(cur, e);
      const key = serialize(n);
      if (!seen.has(key)) {
        seen.set(key, n);
        stack.push(n);
      }
    }
  }
  return [...seen.values()];
}

describe('run machine (model-based)', () => {
  it('reaches every phase from Pending', () => {
    const reached = new Set(states.map((s) => phaseOf(s.value)));
    expect([...reached].sort()).toEqual([...ALL_PHASES].sort());
    // And xstate/graph finds a concrete shortest path to each one.
    for (const phase of ALL_PHASES) {
      const paths = getShortestPaths(runMachine, {
        input,
        events: [...ENVIRONMENT, ...USER],
        serializeState: (s) => serialize(s as RunSnapshot) as never,
        toState: (s) => phaseOf((s as RunSnapshot).value) === phase,
      });
      expect(paths.length, `no path to ${phase}`).toBeGreaterThan(0);
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
    for (const s of states) {
      if (phaseOf(s.value) === 'Deleted') continue;
      const after = next(s, { type: 'DELETE', at: 0 });
      const alreadyDeleting = phaseOf(s.value) === 'Terminating' && s.context.stopReason === 'delete';
      if (!alreadyDeleting) {
        expect(serialize(after), `DELETE ignored in ${JSON.stringify(s.value)}`).not.toBe(serialize(s));
      }
      const reachable = environmentClosure(after).map((x) => phaseOf(x.value));
      expect(reachable, `Deleted unreachable after DELETE in ${JSON.stringify(s.value)}`).toContain('Deleted');
    }
  });

  it('asks for the right effects: launch on every attempt, terminate before new capacity and at the end', () => {
    const actionsOf = (s: RunSnapshot, e: RunEvent) => transition(runMachine, s, e)[1].map((a) => a.type);
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
});
