// The TrainingRun document after validation and defaulting. The JSON Schema in
// schema/trainingrun.schema.json is the authority; these types mirror it so the rest of the
// program never has to guess which fields may be absent once defaults are applied.

import type { NotificationReceiver } from '../notify/receivers.js';
export const API_VERSION = 'runctl.dev/v1alpha1';
export const KIND = 'TrainingRun';

export type ProviderName = 'aws' | 'local';
export type Market = 'spot' | 'on-demand' | 'spot-then-on-demand';

export interface TrainingRun {
  apiVersion: typeof API_VERSION;
  kind: typeof KIND;
  metadata: RunMetadata;
  spec: RunSpec;
}

export interface RunMetadata {
  /** DNS-1123 label, unique across every file the controller reads. */
  name: string;
  labels: Record<string, string>;
}

export interface RunSpec {
  provider: ProviderName;
  code: CodeSpec;
  /**
   * The "installing" phase: a shell command, or the command with a cache of what it builds
   * (SetupSpec). Absent means nothing to install. Read it through setupCommand()/setupCache().
   */
  setup?: string | SetupSpec;
  /** Shell command for the "training" phase. */
  run: string;
  env: Record<string, string>;
  /** Environment variable name -> reference such as `ssm:/team/hf-token`; resolved on the instance. */
  secrets: Record<string, string>;
  resources: ResourcesSpec;
  checkpoints: CheckpointsSpec;
  recovery: RecoverySpec;
  timeouts: TimeoutsSpec;
  budget: BudgetSpec;
  suspend: boolean;
  /** Asks for one simulated spot interruption, to rehearse recovery. */
  rehearsal?: RehearsalSpec;
  /** Webhooks told about this run's transitions, besides runctl.yaml's (docs/notifications.md). */
  notifications?: NotificationReceiver[];
  /** How the agent reads the job's progress; absent: the built-in formats (docs/progress.md). */
  progress?: ProgressSpec;
}

export interface ProgressSpec {
  /**
   * ECMAScript regular expression (the `u` flag's syntax) matched against each line of the job's
   * output, with the named group `step` and optionally `total`, `loss` and metrics; replaces the
   * built-in formats. Checked and translated to Python by src/spec/progress-pattern.ts.
   */
  pattern?: string;
}

export interface CodeSpec {
  /** Directory, relative to the repository root, bundled and shipped to the instance. */
  path: string;
  /** Extra gitignore-style patterns left out of the bundle. */
  exclude: string[];
  /**
   * Gitignore-style patterns shipped even when a .gitignore leaves them out (issue 12: a project's
   * prepared data, `*.bin`, ignored by its .gitignore). `exclude` still has the last word. No
   * default, so specs that do not use it keep their generation hash.
   */
  include?: string[];
}

/** `setup` in its mapping form: the command, and what of its output is cached (issue 12). */
export interface SetupSpec {
  /** Shell command for the installing phase, run in the code directory. */
  run: string;
  cache?: SetupCacheSpec;
}

/**
 * What setup builds, archived into storage after it succeeds and restored instead of running it
 * when the key is the same (docs/agent.md, "Setup cache").
 */
export interface SetupCacheSpec {
  /** Folders or files setup creates, relative to the code directory (no `/…`, no `..`, no wildcards). */
  paths: string[];
  /** Files in the code directory whose content, with the command, image and architecture, makes the key. */
  key: string[];
}

/** The setup command of a spec, whichever form `setup` takes; undefined when there is none. */
export function setupCommand(spec: Pick<RunSpec, 'setup'>): string | undefined {
  return typeof spec.setup === 'string' ? spec.setup : spec.setup?.run;
}

/** The setup cache a spec asks for, or undefined. */
export function setupCache(spec: Pick<RunSpec, 'setup'>): SetupCacheSpec | undefined {
  return typeof spec.setup === 'object' ? spec.setup.cache : undefined;
}

export interface ResourcesSpec {
  /** Tried in order (the capacity ladder). Required for aws; ignored by local. */
  instanceTypes: string[];
  market: Market;
  /** USD per instance-hour; only with a spot market; never defaulted. */
  maxSpotPrice?: number;
  region?: string;
  availabilityZones: string[];
  /** AMI id (`ami-…`) or an SSM parameter path that resolves to one. */
  image?: string;
  rootVolumeGiB: number;
  iamInstanceProfile?: string;
  subnetId?: string;
  securityGroupIds: string[];
}

export interface CheckpointsSpec {
  /** Directory on the instance, exported to the job as RUNCTL_CHECKPOINT_DIR. */
  dir: string;
  /** `s3://bucket/prefix` (aws) or `file://…` (local). Local defaults to .runctl/local/storage. */
  storage?: string;
  syncInterval: string;
  keep: number;
  signal: 'SIGTERM' | 'SIGINT' | 'SIGUSR1' | 'SIGUSR2' | 'SIGHUP';
  /**
   * Who gets `signal`: `main` (the process `run` starts, or the command a `run` shell script
   * runs; its workers keep running while it saves) or `group` (the job's whole process group).
   * Either way the group gets SIGKILL when `gracePeriod` ends (docs/checkpoints.md, issue 9).
   */
  signalScope: 'main' | 'group';
  gracePeriod: string;
}

export interface RecoverySpec {
  maxInterruptions: number;
  maxRetriesOnError: number;
  /** When a new generation replaces a running one, start it from the old generation's latest checkpoint. */
  seedFromPreviousGeneration: boolean;
  /**
   * Launch the next attempt's capacity when an interruption notice is seen, and start its job once
   * the interrupted attempt's final checkpoint is safe (issue 12). Unset (no schema default, so it
   * stays undefined): true for the spot markets, false for on-demand (prelaunchEnabled in
   * src/reconciler/prelaunch.ts).
   */
  prelaunch?: boolean;
  /** Also prelaunch on an EC2 rebalance recommendation; default false. */
  prelaunchOnRebalance?: boolean;
}

export interface TimeoutsSpec {
  provisioning: string;
  installing: string;
  training: string;
  /** No job output for this long fails the attempt with reason Stalled; unset: never. */
  stall?: string;
}

export interface BudgetSpec {
  maxCostUSD?: number;
}

export interface RehearsalSpec {
  /** Deliver one simulated spot notice this long after training starts (first attempt only). */
  interruptAfter: string;
}

/** Project-wide defaults from `runctl.yaml` at the repository root. */
export interface ProjectConfig {
  defaults: {
    region?: string;
    storage?: string;
    profile?: string;
    iamInstanceProfile?: string;
  };
  /** `s3://bucket/prefix` for shared controller state (status, events, leases). */
  state?: string;
  prune: boolean;
  /** Webhooks told about every run's transitions (docs/notifications.md). */
  notifications?: NotificationReceiver[];
}

/** A validated run together with where it came from. */
export interface LoadedRun {
  run: TrainingRun;
  /** File the document came from, relative to the current directory. */
  file: string;
  /** 0-based index of the document within a multi-document file. */
  documentIndex: number;
  /** Stable hash over what is trained (code, setup, run, env, secrets, resources). */
  specHash: string;
}
