// Persisting and restoring the run machine's snapshot, and reading the phase out of it. Pure.
import { initialTransition, transition, type SnapshotFrom } from 'xstate';
import type { Phase } from '../state/types.js';
import { EFFECT_TYPES, type Effect, type RunEvent } from './events.js';
import { runMachine, type RunContext, type RunInput } from './run-machine.js';

export type RunSnapshot = SnapshotFrom<typeof runMachine>;

/** What is stored in status.snapshot: the state value and context, nothing live. */
export interface PersistedRun {
  value: string | Record<string, string>;
  context: RunContext;
}

export function initialSnapshot(input: RunInput): RunSnapshot {
  return initialTransition(runMachine, input)[0];
}

export function persist(snapshot: RunSnapshot): PersistedRun {
  return { value: snapshot.value as PersistedRun['value'], context: snapshot.context };
}

export function restore(persisted: PersistedRun): RunSnapshot {
  return runMachine.resolveState({ value: persisted.value, context: persisted.context });
}

/** Top-level state name: the phase users see. */
export function phaseOf(value: PersistedRun['value'] | RunSnapshot['value']): Phase {
  const top = typeof value === 'string' ? value : Object.keys(value)[0];
  // LeavingInterrupted is transient (eventless) and never rests; report what it decides from.
  return (top === 'LeavingInterrupted' ? 'Interrupted' : top) as Phase;
}

/** Sub-state inside a phase, e.g. Terminating's Stopping/Releasing. */
export function subPhaseOf(value: PersistedRun['value'] | RunSnapshot['value']): string | undefined {
  return typeof value === 'string' ? undefined : Object.values(value)[0];
}

export interface Step {
  snapshot: RunSnapshot;
  effects: Effect[];
  changed: boolean;
}

const EFFECTS = new Set<string>(EFFECT_TYPES);

/** One machine step: the next snapshot and the effects it asks for. */
export function step(snapshot: RunSnapshot, event: RunEvent): Step {
  const [next, actions] = transition(runMachine, snapshot, event);
  const effects = actions
    .filter((a) => EFFECTS.has(a.type))
    .map((a) => (a.params === undefined ? { type: a.type } : { type: a.type, params: a.params }) as Effect);
  const changed =
    effects.length > 0 ||
    JSON.stringify(next.value) !== JSON.stringify(snapshot.value) ||
    JSON.stringify(next.context) !== JSON.stringify(snapshot.context);
  return { snapshot: next, effects, changed };
}
