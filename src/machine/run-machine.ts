// The run machine: phases, guards and the effects each transition asks for. Pure: it never does
// I/O or reads a clock. The reconciler drives it with XState's `transition()` and executes the
// returned effect actions through a provider (see src/reconciler/).
import { assign, setup } from 'xstate';
import type { StopReason } from '../providers/types.js';
import type { Limits, RunEvent } from './events.js';

export interface Failure {
  reason: string;
  message: string;
}

export interface Deadline {
  kind: 'provisioning' | 'installing' | 'training' | 'stop';
  /** Epoch ms. */
  at: number;
}

export interface RunContext {
  run: string;
  generation: number;
  /** 0 until the first launch; every entry into Provisioning starts a new attempt. */
  attempt: number;
  interruptions: number;
  errorRetries: number;
  limits: Limits;
  deadline?: Deadline;
  stopReason?: StopReason;
  /** Generation to start once the current attempt has stopped (NEW_GENERATION while active). */
  pendingGeneration?: number;
  failure?: Failure;
  /** Why the last interruption happened (spot notice, instance gone), for status and events. */
  lastInterruption?: string;
  /** Why the last error retry happened (the failed attempt's first line). */
  lastRetry?: string;
  /** Why the run is (or last was) Resuming: an interruption, or a retry after the job failed. */
  resumeCause?: 'interruption' | 'retry';
  /**
   * Training time of this generation's earlier attempts, summed (ms): spec.timeouts.training
   * bounds the sum, not each attempt (schema; issue 10, input 7). Persisted with the snapshot, so
   * a controller restart does not reset it.
   */
  trainingUsedMs?: number;
  /** Epoch ms the current attempt entered Training; set only while in Training. */
  trainingSince?: number;
  /** Attempts that reached Training in this generation (for the timeout message). */
  trainingAttempts?: number;
  rehearsalDone: boolean;
  /**
   * The attempt whose capacity was launched ahead of time during the notice (spec.recovery.prelaunch,
   * issue 12): always `attempt + 1`. Its agent waits at a closed start gate until the attempt before
   * it has stopped, so two jobs never train for one run at once. Cleared when it becomes the attempt.
   */
  replacement?: number;
  /** The replacement's agent has been deployed (it sets up, then waits at its start gate). */
  replacementDeployed?: boolean;
  /** The current attempt's job is known to have stopped (agent reported, job failed, or instance gone). */
  previousStopped?: boolean;
  /** An abandoned replacement's attempt number: the next attempt is numbered after it (its launch key stays unused). */
  skipAttempt?: number;
}

export interface RunInput {
  run: string;
  generation: number;
  limits: Limits;
}

function deadlineFor(kind: Deadline['kind'], limits: Limits, at: number): Deadline {
  const ms =
    kind === 'provisioning'
      ? limits.provisioningMs
      : kind === 'installing'
        ? limits.installingMs
        : kind === 'training'
          ? limits.trainingMs
          : limits.stopGraceMs;
  return { kind, at: at + ms };
}

/** The training deadline: what is left of the summed limit, from `at` (epoch ms). */
function trainingDeadline(ctx: RunContext, at: number): Deadline {
  return { kind: 'training', at: at + Math.max(0, ctx.limits.trainingMs - (ctx.trainingUsedMs ?? 0)) };
}

function timeoutFailure(kind: 'provisioning' | 'installing' | 'training', ctx: RunContext): Failure {
  const limit = ctx.limits.text[kind];
  switch (kind) {
    case 'provisioning':
      return {
        reason: 'ProvisioningTimeout',
        message:
          `no instance became ready within spec.timeouts.provisioning (${limit}) on attempt ${ctx.attempt}; ` +
          'capacity may be short: add instance types or zones, allow on-demand (market: spot-then-on-demand), ' +
          'or raise spec.timeouts.provisioning',
      };
    case 'installing':
      return {
        reason: 'InstallTimeout',
        message:
          `code sync and setup did not finish within spec.timeouts.installing (${limit}) on attempt ${ctx.attempt}; ` +
          'check the setup output with `runctl logs`, or raise spec.timeouts.installing',
      };
    case 'training': {
      const attempts = ctx.trainingAttempts ?? 1;
      return {
        reason: 'TrainingTimeout',
        message:
          `training ran ${formatSeconds(ctx.trainingUsedMs ?? 0)} in total over ${attempts} attempt${attempts === 1 ? '' : 's'} ` +
          `(attempt ${ctx.attempt} the last), reaching spec.timeouts.training (${limit}), which bounds training time summed over all attempts; ` +
          'the job was checkpointed and stopped; raise spec.timeouts.training to let it run longer',
      };
    }
  }
}

type StopEventType = 'SUSPEND' | 'DELETE' | 'NEW_GENERATION' | 'BUDGET_EXCEEDED';

const stopReasonOf: Record<StopEventType, StopReason> = {
  SUSPEND: 'suspend',
  DELETE: 'delete',
  NEW_GENERATION: 'new-generation',
  BUDGET_EXCEEDED: 'budget',
};

/** Launch the next attempt's capacity during the notice (prelaunch), or just move to Interrupted. */
const noticeWithPrelaunch = [
  {
    guard: 'prelaunchWanted',
    target: 'Interrupted',
    actions: ['countInterruption', 'planReplacement', { type: 'prelaunch', params: ({ context }: { context: RunContext }) => ({ attempt: context.attempt + 1 }) }],
  },
  { target: 'Interrupted', actions: 'countInterruption' },
] as const;

/** Deploy the prelaunched replacement's agent (gate closed) once its instance is ready. */
const replacementReady = {
  guard: 'replacementWaiting',
  actions: [
    'markReplacementDeployed',
    { type: 'deployReplacement', params: ({ context }: { context: RunContext }) => ({ attempt: context.replacement ?? context.attempt + 1 }) },
  ],
} as const;

/** Handlers shared by every phase in which an attempt's instance may be alive. */
const whileAlive = {
  SPOT_NOTICE: { target: 'Interrupted', actions: 'countInterruption' },
  INSTANCE_GONE: { target: 'Interrupted', actions: 'countInterruption' },
  SUSPEND: { target: 'Terminating', actions: 'setStopReason' },
  DELETE: { target: 'Terminating', actions: 'setStopReason' },
  NEW_GENERATION: { target: 'Terminating', actions: ['setStopReason', 'rememberGeneration'] },
  BUDGET_EXCEEDED: { target: 'Terminating', actions: ['setStopReason', 'recordBudget'] },
} as const;

/** ...and once the agent runs, the job's outcome too. */
const whileAgentRuns = {
  ...whileAlive,
  SPOT_NOTICE: noticeWithPrelaunch,
  JOB_SUCCEEDED: { target: 'Completed' },
  JOB_FAILED: [
    { guard: 'canRetry', target: 'Resuming', actions: ['countRetry', 'markPreviousStopped'] },
    { target: 'Failed', actions: 'failJob' },
  ],
} as const;

export const runMachine = setup({
  types: {
    context: {} as RunContext,
    events: {} as RunEvent,
    input: {} as RunInput,
  },
  actions: {
    // Effects: no implementation here on purpose; `transition()` returns them to the reconciler.
    launch: () => {},
    deployAgent: () => {},
    requestStop: (_, _params: { reason: StopReason }) => {},
    terminate: (_, _params: { reason: string }) => {},
    deliverSpotNotice: () => {},
    prelaunch: (_, _params: { attempt: number }) => {},
    deployReplacement: (_, _params: { attempt: number }) => {},
    openStartGate: (_, _params: { attempt: number }) => {},

    planReplacement: assign(({ context }) => ({ replacement: context.attempt + 1, replacementDeployed: false })),
    markPreviousStopped: assign({ previousStopped: true }),
    markReplacementDeployed: assign({ replacementDeployed: true }),
    // A replacement never used (the run stops, fails or completes instead): terminated with the
    // rest, and its attempt number skipped so a later launch never adopts its gone instance.
    dropReplacement: assign(({ context }) =>
      context.replacement === undefined ? {} : { replacement: undefined, replacementDeployed: undefined, skipAttempt: context.replacement },
    ),

    startAttempt: assign(({ context }) => ({
      attempt: Math.max(context.attempt, context.skipAttempt ?? 0) + 1,
      failure: undefined,
      replacement: undefined,
      replacementDeployed: undefined,
      previousStopped: undefined,
      skipAttempt: undefined,
    })),
    setDeadline: assign(({ context, event }, params: { kind: Deadline['kind'] }) => ({
      deadline: deadlineFor(params.kind, context.limits, event.at),
    })),
    clearDeadline: assign({ deadline: undefined }),
    startTraining: assign(({ context, event }) => ({
      trainingSince: event.at,
      trainingAttempts: (context.trainingAttempts ?? 0) + 1,
      deadline: trainingDeadline(context, event.at),
    })),
    stopTraining: assign(({ context, event }) =>
      context.trainingSince === undefined
        ? {}
        : { trainingUsedMs: (context.trainingUsedMs ?? 0) + Math.max(0, event.at - context.trainingSince), trainingSince: undefined },
    ),
    setStopReason: assign(({ event }) => ({ stopReason: stopReasonOf[event.type as StopEventType] })),
    countInterruption: assign(({ context, event }) => ({
      interruptions: context.interruptions + 1,
      lastInterruption:
        event.type === 'SPOT_NOTICE' || event.type === 'INSTANCE_GONE' ? event.reason : event.type,
      resumeCause: 'interruption' as const,
    })),
    countRetry: assign(({ context, event }) => ({
      errorRetries: context.errorRetries + 1,
      lastRetry: event.type === 'JOB_FAILED' ? firstLine(event.message) : event.type,
      resumeCause: 'retry' as const,
    })),
    failJob: assign(({ context, event }) => ({
      failure: {
        reason: (event.type === 'JOB_FAILED' && event.reason) || 'JobFailed',
        message:
          (event.type === 'JOB_FAILED' ? event.message : 'the job failed') +
          (context.limits.maxRetriesOnError > 0
            ? ` (after ${context.errorRetries} retr${context.errorRetries === 1 ? 'y' : 'ies'}; spec.recovery.maxRetriesOnError is ${context.limits.maxRetriesOnError})`
            : ''),
      },
    })),
    failTimeout: assign(({ context }) => {
      const kind = context.deadline?.kind;
      if (kind === 'provisioning' || kind === 'installing' || kind === 'training') {
        return { failure: timeoutFailure(kind, context) };
      }
      return {};
    }),
    failFatal: assign(({ event }) => ({
      failure:
        event.type === 'FATAL'
          ? { reason: event.reason, message: event.message }
          : { reason: 'ProviderError', message: 'the provider refused the request' },
    })),
    failInterruptions: assign(({ context }) => ({
      failure: {
        reason: 'TooManyInterruptions',
        message:
          `the run was interrupted ${context.interruptions} times, more than spec.recovery.maxInterruptions ` +
          `(${context.limits.maxInterruptions}); raise it, or use market: spot-then-on-demand`,
      },
    })),
    failStopped: assign(({ context }) => {
      if (context.stopReason === 'budget') {
        return { failure: context.failure ?? { reason: 'BudgetExceeded', message: 'the budget was exceeded' } };
      }
      return {};
    }),
    recordBudget: assign(({ event }) => ({
      failure: {
        reason: 'BudgetExceeded',
        message: event.type === 'BUDGET_EXCEEDED' ? event.message : 'the budget was exceeded',
      },
    })),
    rememberGeneration: assign(({ event, context }) => ({
      pendingGeneration: event.type === 'NEW_GENERATION' ? event.generation : context.pendingGeneration,
    })),
    newGeneration: assign(({ event, context }) => ({
      generation:
        event.type === 'NEW_GENERATION' ? event.generation : (context.pendingGeneration ?? context.generation),
      pendingGeneration: undefined,
      stopReason: undefined,
      attempt: 0,
      interruptions: 0,
      errorRetries: 0,
      failure: undefined,
      rehearsalDone: false,
      trainingUsedMs: 0,
      trainingAttempts: 0,
      replacement: undefined,
      replacementDeployed: undefined,
      skipAttempt: undefined,
    })),
    adoptPendingGeneration: assign(({ context }) =>
      context.pendingGeneration === undefined
        ? {}
        : {
            generation: context.pendingGeneration,
            pendingGeneration: undefined,
            attempt: 0,
            interruptions: 0,
            errorRetries: 0,
            rehearsalDone: false,
            trainingUsedMs: 0,
            trainingAttempts: 0,
            replacement: undefined,
            replacementDeployed: undefined,
            skipAttempt: undefined,
          },
    ),
    markRehearsed: assign({ rehearsalDone: true }),
    updateLimits: assign(({ event, context }) => {
      const limits = event.type === 'LIMITS' ? event.limits : context.limits;
      // A training limit changed in place applies to the attempt that is training now.
      if (context.deadline?.kind === 'training' && context.trainingSince !== undefined) {
        return { limits, deadline: trainingDeadline({ ...context, limits }, context.trainingSince) };
      }
      return { limits };
    }),
  },
  guards: {
    deadlinePassed: ({ context, event }) => context.deadline !== undefined && event.at >= context.deadline.at,
    canRetry: ({ context }) => context.errorRetries < context.limits.maxRetriesOnError,
    tooManyInterruptions: ({ context }) => context.interruptions > context.limits.maxInterruptions,
    rehearsalPending: ({ context }) => !context.rehearsalDone,
    stoppingFor: ({ context }, params: { reason: StopReason }) => context.stopReason === params.reason,
    stoppedWithFailure: ({ context }) => context.stopReason === 'timeout' || context.stopReason === 'budget',
    // Never a second replacement: only when none was launched for this attempt.
    prelaunchWanted: ({ context, event }) => event.type === 'SPOT_NOTICE' && event.prelaunch === true && context.replacement === undefined,
    noReplacement: ({ context }) => context.replacement === undefined,
    replacementWaiting: ({ context }) => context.replacement !== undefined && !context.replacementDeployed,
    hasReplacement: ({ context }) => context.replacement !== undefined,
    // The replacement may start its job only once the attempt before it has stopped.
    canHandOver: ({ context }) => context.replacement !== undefined && context.previousStopped === true,
  },
}).createMachine({
  id: 'run',
  context: ({ input }) => ({
    run: input.run,
    generation: input.generation,
    attempt: 0,
    interruptions: 0,
    errorRetries: 0,
    limits: input.limits,
    rehearsalDone: false,
  }),
  initial: 'Pending',
  on: {
    LIMITS: { actions: 'updateLimits' },
    // A provider error that retrying cannot fix (quota, permission, invalid parameter).
    FATAL: { target: '.Failed', actions: 'failFatal' },
  },
  states: {
    Pending: {
      on: {
        START: 'Provisioning',
        SUSPEND: 'Suspended',
        DELETE: 'Deleted',
        NEW_GENERATION: { actions: 'newGeneration' },
      },
    },

    Provisioning: {
      entry: ['startAttempt', { type: 'setDeadline', params: { kind: 'provisioning' } }, 'launch'],
      on: {
        ...whileAlive,
        INSTANCE_READY: 'Syncing',
        TICK: { guard: 'deadlinePassed', target: 'Failed', actions: 'failTimeout' },
        RETRY_LAUNCH: { actions: 'launch' },
      },
    },

    Syncing: {
      entry: [{ type: 'setDeadline', params: { kind: 'installing' } }, 'deployAgent'],
      on: {
        ...whileAgentRuns,
        AGENT_INSTALLING: 'Installing',
        AGENT_TRAINING: 'Training',
        REDEPLOY: { actions: 'deployAgent' },
        TICK: { guard: 'deadlinePassed', target: 'Failed', actions: 'failTimeout' },
      },
    },

    Installing: {
      on: {
        ...whileAgentRuns,
        AGENT_TRAINING: 'Training',
        REDEPLOY: { actions: 'deployAgent' },
        TICK: { guard: 'deadlinePassed', target: 'Failed', actions: 'failTimeout' },
      },
    },

    Training: {
      entry: 'startTraining',
      exit: 'stopTraining',
      on: {
        ...whileAgentRuns,
        REDEPLOY: { actions: 'deployAgent' },
        REHEARSE: { guard: 'rehearsalPending', actions: ['markRehearsed', 'deliverSpotNotice'] },
        // spec.recovery.prelaunchOnRebalance: launch the replacement now; it waits until a notice
        // (or the job's end) and is never a second one.
        REBALANCE_RECOMMENDED: {
          guard: 'noReplacement',
          actions: ['planReplacement', { type: 'prelaunch', params: ({ context }) => ({ attempt: context.attempt + 1 }) }],
        },
        REPLACEMENT_READY: replacementReady,
        TICK: {
          guard: 'deadlinePassed',
          target: 'Terminating',
          actions: ['failTimeout', assign({ stopReason: 'timeout' as StopReason })],
        },
      },
    },

    Interrupted: {
      entry: { type: 'setDeadline', params: { kind: 'stop' } },
      on: {
        // The job has stopped (its final checkpoint is as safe as it will get): a prelaunched
        // replacement may take over. A passed deadline proves nothing: the instance must go first.
        AGENT_STOPPED: { target: 'LeavingInterrupted', actions: 'markPreviousStopped' },
        INSTANCE_GONE: { target: 'LeavingInterrupted', actions: 'markPreviousStopped' },
        TICK: { guard: 'deadlinePassed', target: 'LeavingInterrupted' },
        JOB_SUCCEEDED: 'Completed',
        JOB_FAILED: { target: 'LeavingInterrupted', actions: 'markPreviousStopped' },
        REPLACEMENT_READY: replacementReady,
        SUSPEND: { target: 'Terminating', actions: 'setStopReason' },
        DELETE: { target: 'Terminating', actions: 'setStopReason' },
        NEW_GENERATION: { target: 'Terminating', actions: ['setStopReason', 'rememberGeneration'] },
        BUDGET_EXCEEDED: { target: 'Terminating', actions: ['setStopReason', 'recordBudget'] },
      },
    },

    // A decision point, not a phase anyone sees: too many interruptions fail the run.
    LeavingInterrupted: {
      always: [
        { guard: 'tooManyInterruptions', target: 'Failed', actions: 'failInterruptions' },
        { target: 'Resuming' },
      ],
    },

    // Terminates the stopped attempt's instance (never the prelaunched replacement's). Without a
    // replacement, new capacity is launched once the old instance is gone; with one, its start gate
    // opens as soon as the old job is known to have stopped (HANDOVER), or once its instance is gone.
    Resuming: {
      entry: [
        'clearDeadline',
        { type: 'terminate', params: ({ context }) => ({ reason: 'resuming on new capacity', spare: context.replacement }) },
      ],
      on: {
        HANDOVER: {
          guard: 'canHandOver',
          target: 'Provisioning',
          actions: { type: 'openStartGate', params: ({ context }) => ({ attempt: context.replacement ?? context.attempt + 1 }) },
        },
        INSTANCE_GONE: [
          {
            guard: 'hasReplacement',
            target: 'Provisioning',
            actions: { type: 'openStartGate', params: ({ context }) => ({ attempt: context.replacement ?? context.attempt + 1 }) },
          },
          { target: 'Provisioning' },
        ],
        SUSPEND: { target: 'Terminating', actions: 'setStopReason' },
        DELETE: { target: 'Terminating', actions: 'setStopReason' },
        NEW_GENERATION: { target: 'Terminating', actions: ['setStopReason', 'rememberGeneration'] },
        BUDGET_EXCEEDED: { target: 'Terminating', actions: ['setStopReason', 'recordBudget'] },
      },
    },

    Terminating: {
      initial: 'Stopping',
      entry: [{ type: 'setDeadline', params: { kind: 'stop' } }, 'dropReplacement'],
      states: {
        Stopping: {
          entry: {
            type: 'requestStop',
            params: ({ context }) => ({ reason: context.stopReason ?? 'delete' }),
          },
          on: {
            AGENT_STOPPED: 'Releasing',
            JOB_SUCCEEDED: 'Releasing',
            JOB_FAILED: 'Releasing',
            TICK: { guard: 'deadlinePassed', target: 'Releasing' },
            INSTANCE_GONE: '#run.Terminating.Released',
          },
        },
        Releasing: {
          entry: {
            type: 'terminate',
            params: ({ context }) => ({ reason: `stopping for ${context.stopReason ?? 'delete'}` }),
          },
          on: { INSTANCE_GONE: 'Released' },
        },
        Released: {
          always: [
            { guard: { type: 'stoppingFor', params: { reason: 'suspend' } }, target: '#run.Suspended' },
            { guard: { type: 'stoppingFor', params: { reason: 'delete' } }, target: '#run.Deleted' },
            {
              guard: { type: 'stoppingFor', params: { reason: 'new-generation' } },
              target: '#run.Provisioning',
              actions: 'newGeneration',
            },
            { target: '#run.Failed', actions: 'failStopped' },
          ],
        },
      },
      on: {
        // A deletion outranks whatever the run was stopping for; the stop already under way serves it.
        DELETE: { actions: assign({ stopReason: 'delete' as StopReason }) },
        NEW_GENERATION: { actions: 'rememberGeneration' },
        SUSPEND: { guard: ({ context }) => context.stopReason === 'new-generation', actions: 'setStopReason' },
      },
      exit: 'clearDeadline',
    },

    Completed: {
      entry: ['clearDeadline', 'dropReplacement', { type: 'terminate', params: { reason: 'completed' } }],
      on: {
        DELETE: 'Deleted',
        NEW_GENERATION: { target: 'Provisioning', actions: 'newGeneration' },
      },
    },

    Failed: {
      entry: ['clearDeadline', 'dropReplacement', { type: 'terminate', params: { reason: 'failed' } }],
      on: {
        DELETE: 'Deleted',
        NEW_GENERATION: { target: 'Provisioning', actions: 'newGeneration' },
      },
    },

    Suspended: {
      entry: ['clearDeadline', 'adoptPendingGeneration', assign({ stopReason: undefined })],
      on: {
        RESUME: 'Provisioning',
        DELETE: 'Deleted',
        NEW_GENERATION: { actions: 'newGeneration' },
      },
    },

    Deleted: { type: 'final' },
  },
});

function formatSeconds(ms: number): string {
  const s = Math.round(ms / 1000);
  if (s < 120) return `${s}s`;
  const m = Math.floor(s / 60);
  return m < 120 ? `${m}m${String(s % 60).padStart(2, '0')}s` : `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}

function firstLine(text: string): string {
  const line = text.split('\n').find((l) => l.trim() !== '') ?? text;
  return line.length > 120 ? `${line.slice(0, 117)}...` : line;
}
