// Events the reconciler derives from what it observes. Every event carries `at` (epoch ms) so the
// machine can set and check deadlines without reading a clock: it stays pure and replayable.
import type { StopReason } from '../providers/types.js';

export interface Limits {
  maxInterruptions: number;
  maxRetriesOnError: number;
  provisioningMs: number;
  installingMs: number;
  trainingMs: number;
  /** How long to wait for the agent to checkpoint and stop before terminating anyway. */
  stopGraceMs: number;
  /** Human-readable limits for messages, e.g. `{ training: '48h' }`. */
  text: { provisioning: string; installing: string; training: string };
}

interface At {
  at: number;
}

export type RunEvent =
  | ({ type: 'START' } & At)
  | ({ type: 'TICK' } & At)
  | ({ type: 'INSTANCE_READY' } & At)
  | ({ type: 'AGENT_INSTALLING' } & At)
  | ({ type: 'AGENT_TRAINING' } & At)
  | ({ type: 'JOB_SUCCEEDED' } & At)
  | ({ type: 'JOB_FAILED'; message: string; /** Condition reason when not a plain exit (e.g. Stalled). */ reason?: string } & At)
  | ({
      type: 'SPOT_NOTICE';
      reason: string;
      /**
       * Launch the next attempt's capacity now, while the interrupted one saves its final
       * checkpoint (spec.recovery.prelaunch; issue 12). Set by the reconciler from the spec.
       */
      prelaunch?: boolean;
    } & At)
  /** The attempt's instance got an EC2 rebalance recommendation and spec.recovery.prelaunchOnRebalance is true. */
  | ({ type: 'REBALANCE_RECOMMENDED' } & At)
  /** The prelaunched replacement's instance is running and can receive the agent. */
  | ({ type: 'REPLACEMENT_READY' } & At)
  /** The interrupted attempt's job has stopped: the prelaunched replacement may take over. */
  | ({ type: 'HANDOVER' } & At)
  | ({ type: 'AGENT_STOPPED' } & At)
  | ({ type: 'INSTANCE_GONE'; spot: boolean; reason: string } & At)
  | ({ type: 'REDEPLOY' } & At)
  | ({ type: 'REHEARSE' } & At)
  | ({ type: 'SUSPEND' } & At)
  | ({ type: 'RESUME' } & At)
  | ({ type: 'DELETE' } & At)
  | ({ type: 'NEW_GENERATION'; generation: number } & At)
  | ({ type: 'RETRY_LAUNCH' } & At)
  | ({ type: 'FATAL'; reason: string; message: string } & At)
  | ({ type: 'BUDGET_EXCEEDED'; message: string } & At)
  | ({ type: 'LIMITS'; limits: Limits } & At);

export type RunEventType = RunEvent['type'];

/** Effects the machine asks for; the reconciler executes them through the provider. */
export type Effect =
  | { type: 'launch' }
  | { type: 'deployAgent' }
  | { type: 'requestStop'; params: { reason: StopReason } }
  | { type: 'terminate'; params: { reason: string; /** Attempt whose (prelaunched) instance is kept. */ spare?: number } }
  | { type: 'deliverSpotNotice' }
  /** Launch the capacity of `attempt` (the next one) ahead of time; same launch key as its own launch later. */
  | { type: 'prelaunch'; params: { attempt: number } }
  /** Ship code and start the agent of `attempt` with its start gate closed: it sets up, then waits. */
  | { type: 'deployReplacement'; params: { attempt: number } }
  /** Let the agent of `attempt` start the job: the attempt before it has stopped (its final checkpoint is safe). */
  | { type: 'openStartGate'; params: { attempt: number } };

export const EFFECT_TYPES = ['launch', 'deployAgent', 'requestStop', 'terminate', 'deliverSpotNotice', 'prelaunch', 'deployReplacement', 'openStartGate'] as const;
