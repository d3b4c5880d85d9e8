// What runctl remembers about each run, and the store port that keeps it. Two stores implement
// the port: files under .runctl/ (default, one controller per folder) and S3 (shared, leased).
import type { AgentFault, AgentPhase, AgentStatus, CheckpointRef, FinalSyncReport, InstancePrice, InstanceRef, Progress, RestoredFrom, SetupCacheReport } from '../providers/types.js';
import type { RunLedger } from '../reconciler/ledger.js';
import type { RunSpec } from '../spec/types.js';

/** Every phase a run's status can be in (the run machine's states, as status shows them). */
export const PHASES = [
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
] as const;

export type Phase = (typeof PHASES)[number];

export const TERMINAL_PHASES: readonly Phase[] = ['Completed', 'Failed', 'Suspended', 'Deleted'];

/** Kubernetes-style condition. */
export interface Condition {
  type: string;
  status: 'True' | 'False' | 'Unknown';
  reason: string;
  message: string;
  lastTransitionTime: string;
}

export interface InstanceRecord extends InstanceRef {
  generation: number;
  attempt: number;
  endedAt?: string;
  endReason?: string;
  /** Cost of this instance so far (or in total, once ended), in USD, when the price is known. */
  costUSD?: number;
  /**
   * Its prices as last read from the provider (spot price steps over its life, the on-demand price
   * of its type), or why they are unknown. Kept in state so a price is asked for once, not per pass.
   */
  price?: InstancePrice;
  /** sha256 of the code bundle the agent on this instance was given (kept from deletion while the instance lives). */
  codeBundle?: string;
}

/** An effect the reconciler has decided on and not yet finished: replayed after a crash. */
export interface PendingEffects {
  /** Id of the transition that produced these effects (events carry it too). */
  transitionId: string;
  /** Phase the effects lead to, for display while they run. */
  phaseAfter: Phase;
  effects: EffectRecord[];
  /** Machine snapshot to commit once every effect has been applied. */
  snapshotAfter: unknown;
}

export interface EffectRecord {
  type: string;
  params?: Record<string, unknown>;
}

export interface RunStatus {
  run: string;
  /**
   * This incarnation of the run (like Kubernetes metadata.uid): a UUID created when runctl first
   * saw the run, or `legacy-<hex>` for a record written before uids (see identity.ts).
   */
  uid: string;
  phase: Phase;
  /** Generation of the spec being worked on (increments when what is trained changes). */
  generation: number;
  /** specHash that generation was created from. */
  specHash: string;
  /** Generation whose spec the controller last acted on completely. */
  observedGeneration: number;
  attempt: number;
  interruptions: number;
  errorRetries: number;
  conditions: Condition[];
  instances: InstanceRecord[];
  lastCheckpoint?: CheckpointRef & { generation: number };
  /** Checkpoints kept in storage for `generation`, oldest first, as the agent last listed them. */
  checkpoints?: CheckpointRef[];
  /** The current attempt's progress as its agent last reported it (docs/progress.md). */
  progress?: Progress;
  /** Absolute deadlines (ISO time) the reconciler enforces; survive restarts. */
  deadlines: Record<string, string>;
  /** Serialized machine snapshot (XState persisted snapshot). */
  snapshot: unknown;
  pending?: PendingEffects;
  /**
   * Events written with this status but perhaps not yet appended to the event log (outbox
   * pattern): appended right after the status write, and again after a crash (ids dedupe).
   */
  outbox?: RunEvent[];
  /** A provider error retrying cannot fix, waiting to be fed to the machine. */
  fatal?: { reason: string; message: string };
  /** Source file and commit of the spec last applied. */
  source?: { file: string; revision?: string };
  /** The spec of `generation` as last applied (supervision fields updated in place). */
  spec: RunSpec;
  /** A newer generation waiting for the current attempt to stop. */
  nextSpec?: { generation: number; specHash: string; spec: RunSpec };
  /** What the agent of the current attempt last reported. */
  agent?: {
    attempt: number;
    phase: AgentPhase;
    seq: number;
    heartbeatAt: string;
    deployedAt?: string;
    message?: string;
    logTail?: string[];
    restoredFrom?: RestoredFrom;
    failureReason?: AgentStatus['failureReason'];
    /** The agent's report on the final sync after a notice or stop (its event is written once). */
    finalSync?: FinalSyncReport;
    /** What the setup cache did for this attempt (its event is written once). */
    setupCache?: SetupCacheReport;
    /** AgentStatus.jobStartedAt and stoppingSince: the moments the ledger takes from the instance's clock. */
    jobStartedAt?: string;
    stoppingSince?: string;
  };
  /**
   * The setup cache key the run's newest generation last reported (spec.setup.cache): the sweep
   * keeps the cache entry of this key (src/reconciler/bundle-sweep.ts). Kept across attempts, so
   * an attempt that has not reported yet never loses the cache it is about to restore.
   */
  setupCache?: { generation: number; key: string };
  /**
   * Faults the agents of this run reported (one entry per reason, the newest), from the fault
   * channel: `clearedAt` is set once the agent stopped listing it. Conditions are derived from it.
   */
  faults?: RunFault[];
  /** Set while no capacity could be found for the current attempt. */
  /**
   * Why the current attempt has no instance yet, while runctl waits and tries again. `reason` is
   * the condition reason (InsufficientCapacity, QuotaExceeded, InstanceProfileNotReady).
   */
  launchBlocked?: { since: string; message: string; retryAt: string; failures: number; reason?: string };
  /** When the current attempt entered Training (drives the rehearsal interruption). */
  trainingStartedAt?: string;
  /** Why the run failed, when it did. */
  failure?: { reason: string; message: string };
  createdAt: string;
  updatedAt: string;
  /** Monotonic counter of events appended for this run. */
  eventSeq: number;
  /**
   * What the run has cost so far, in USD: the ledger's total over every attempt (spot and
   * on-demand) whose price is known. `ledger.unknown` says which costs are not counted and why.
   */
  costUSD: number;
  /** Per attempt: its timeline and cost; per interruption: time to training again, steps redone (src/reconciler/ledger.ts). */
  ledger?: RunLedger;
}

/** An agent fault as the run's record keeps it: which attempt reported it, and when it cleared. */
export interface RunFault extends AgentFault {
  generation: number;
  attempt: number;
  /** ISO time the reconciler first saw the agent no longer list it. */
  clearedAt?: string;
}

export interface RunEvent {
  /** Unique and deterministic per (transition, step): appending the same id twice is a no-op. */
  id: string;
  seq: number;
  at: string;
  run: string;
  /** The run incarnation it belongs to; absent in events written before uids. */
  uid?: string;
  generation: number;
  attempt: number;
  /** `notification`: a webhook delivery attempt of another event (src/notify/ledger.ts). */
  kind: 'transition' | 'effect' | 'observation' | 'error' | 'spec' | 'notification';
  /** Short machine-readable summary, e.g. `Provisioning -> Syncing`, `launch`. */
  action: string;
  result?: 'ok' | 'error' | 'adopted' | 'skipped';
  message?: string;
  /** AWS request id or similar. */
  requestId?: string;
  data?: Record<string, unknown>;
}

export interface StateStore {
  /**
   * Claim this store for one controller; throws LockHeldError naming the holder. May return a
   * note for the user (e.g. a dead controller's lock was taken over).
   */
  open(): Promise<{ note?: string } | void>;
  close(): Promise<void>;
  listRuns(): Promise<string[]>;
  getStatus(run: string): Promise<RunStatus | undefined>;
  /** Atomic replace. Shared stores make it conditional on what was last read. */
  putStatus(status: RunStatus): Promise<void>;
  deleteStatus(run: string): Promise<void>;
  /** Append, skipping any event whose id is already in the log. */
  appendEvents(run: string, events: RunEvent[]): Promise<void>;
  readEvents(run: string): Promise<RunEvent[]>;
  /**
   * Replaces a status record that getStatus found unreadable (StatusUnreadableError) with a
   * rebuilt one, keeping the unreadable one aside. Returns where it was kept.
   */
  replaceUnreadableStatus?(status: RunStatus): Promise<string | undefined>;
}

export class LockHeldError extends Error {
  constructor(
    message: string,
    readonly holder: string,
  ) {
    super(message);
    this.name = 'LockHeldError';
  }
}

/** A conditional write lost a race (S3 412): another controller holds or changed the run. */
export class StaleWriteError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StaleWriteError';
  }
}
