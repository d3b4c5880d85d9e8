// Turns a spec's supervision fields into the machine's Limits. These apply in place: changing
// them never starts a new generation.
import type { Limits } from '../machine/events.js';
import { parseDuration } from '../spec/duration.js';
import type { RunSpec } from '../spec/types.js';

/** Extra time past the grace period for the agent to upload its final checkpoint. */
const STOP_UPLOAD_ALLOWANCE_MS = 120_000;

export function limitsFromSpec(spec: RunSpec): Limits {
  return {
    maxInterruptions: spec.recovery.maxInterruptions,
    maxRetriesOnError: spec.recovery.maxRetriesOnError,
    provisioningMs: parseDuration(spec.timeouts.provisioning),
    installingMs: parseDuration(spec.timeouts.installing),
    trainingMs: parseDuration(spec.timeouts.training),
    stopGraceMs: parseDuration(spec.checkpoints.gracePeriod) + STOP_UPLOAD_ALLOWANCE_MS,
    text: {
      provisioning: spec.timeouts.provisioning,
      installing: spec.timeouts.installing,
      training: spec.timeouts.training,
    },
  };
}

export function sameLimits(a: Limits, b: Limits): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}
