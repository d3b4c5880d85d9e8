// The Provider port: everything the reconciler needs from a place that runs instances and holds
// storage. Every operation is idempotent: the reconciler may repeat any of them after a crash.
import type { Segment } from '../spec/field-path.js';
import type { RunSpec } from '../spec/types.js';

/** Identifies one attempt of one generation of one run; instances are tagged with all of it. */
export interface AttemptKey {
  run: string;
  /**
   * The run incarnation (src/state/identity.ts): tag `runctl:uid`, part of storage prefixes and
   * launch tokens. Undefined for a run recorded before uids: its instances carry no uid tag and its
   * storage is the un-suffixed `runs/<run>/…`. Instances match a key only when their uid is the
   * same (both undefined included), so a re-created run never adopts its predecessor's.
   */
  uid?: string;
  generation: number;
  attempt: number;
}

export type MarketKind = 'spot' | 'on-demand';

export interface InstanceRef {
  id: string;
  type?: string;
  zone?: string;
  market?: MarketKind;
  /** USD per hour used for cost accounting (spot price or on-demand price), when known. */
  pricePerHour?: number;
  launchedAt: string;
}

/** A price in force from `from` (ISO time) until the next step's `from`, in USD per instance-hour. */
export interface PriceStep {
  from: string;
  usdPerHour: number;
}

/**
 * The prices of one instance as a provider knows them (Provider.priceInstance). Never a guess:
 * a price that cannot be had is absent and its `…Unknown` field says why.
 */
export interface InstancePrice {
  /**
   * The price the instance is billed at, oldest first, covering its life up to `fetchedAt`: spot,
   * the steps of DescribeSpotPriceHistory for its type, zone and product description (the first is
   * the price in force at launch); on-demand, one step from the Price List API; local, one $0 step.
   */
  steps?: PriceStep[];
  /** Why `steps` is missing: the instance's cost is unknown (and not counted against the budget). */
  unknown?: string;
  /** On-demand price of the same instance type in the same region (USD/hour), to say what spot saved. */
  onDemandUSDPerHour?: number;
  /** Why `onDemandUSDPerHour` is missing. */
  onDemandUnknown?: string;
  /** Where the prices came from, for people, e.g. `spot price history us-east-1a Linux/UNIX; price list us-east-1`. */
  source: string;
  /** ISO time the prices were read. */
  fetchedAt: string;
}

export interface LaunchRequest extends AttemptKey {
  spec: RunSpec;
  /** Identifies the controller deployment (tag `runctl:controller`). */
  controller: string;
  /** Instance types / zones / markets already found without capacity for this attempt. */
  exhausted?: string[];
  /**
   * The rung and idempotency token of a launch request that may have been sent before a crash
   * (recorded by `beforeRunInstances`); it is tried first, with the same token, so the instance it
   * may have started is returned instead of a second one being launched elsewhere.
   */
  inFlight?: LaunchIntent;
  /**
   * Called before each launch request with the rung and token about to be used, so the caller can
   * record the intent before the effect (DESIGN.md, crash safety). A throw stops the launch.
   */
  beforeRunInstances?(intent: LaunchIntent): Promise<void>;
  /**
   * Capacity pools tried last: the pool of an instance being reclaimed, when a replacement is
   * launched during its notice (spec.recovery.prelaunch, issue 12). Spot reclaims capacity pool by
   * pool, so the same pool is the likeliest to be refused or interrupted again; it stays on the
   * ladder for when nothing else has capacity.
   */
  avoidPools?: CapacityPool[];
  /**
   * Start the attempt's agent as the instance boots (EC2 user data), not only once the controller
   * has seen it registered with SSM: code sync, the setup cache and, when the gate is open, the
   * restore then overlap SSM registration (issue 12). The agent is still deployed over SSM once the
   * instance is ready, which is harmless when it already runs. Providers without a boot hook
   * ignore it; so does the aws provider when the script would not fit EC2's 16 KB of user data.
   */
  bootAgent?: BootAgent;
}

/** What a launch needs to start the attempt's agent at boot: DeployRequest's fields but the instance. */
export interface BootAgent {
  repoRoot: string;
  seedGeneration?: number;
  /** As DeployRequest.startGate: a replacement launched during a notice waits for the gate. */
  startGate?: boolean;
}

/** One EC2 capacity pool: market, instance type and zone (a zone left out matches any). */
export interface CapacityPool {
  market?: MarketKind;
  type?: string;
  zone?: string;
}

/** One launch request about to be sent: the ladder rung (e.g. `spot/g5.xlarge/us-east-1a`) and its idempotency token. */
export interface LaunchIntent {
  rung: string;
  token: string;
}

export interface LaunchResult {
  instance: InstanceRef;
  /** True when an instance for this attempt already existed and was adopted instead of launched. */
  adopted: boolean;
  /**
   * Whether the instance was given the agent to start at boot (LaunchRequest.bootAgent): `started`
   * when it was, otherwise why not (the script too large, the code not bundled, storage refused).
   * Absent when no boot start was asked for, or the instance was adopted.
   */
  bootAgent?: { started: true } | { started: false; reason: string };
}

export type InstanceState =
  | 'pending'
  | 'running'
  | 'stopping'
  | 'stopped'
  | 'shutting-down'
  | 'terminated';

export interface InstanceObservation extends AttemptKey {
  instance: InstanceRef;
  state: InstanceState;
  /** The instance can receive the agent (aws: SSM PingStatus Online; local: sandbox up). */
  ready: boolean;
  /** A spot interruption notice was seen, or the instance stopped/terminated for a spot reason. */
  spotInterruption?: { noticedAt: string; reason: string };
  /** Provider-specific state reason, e.g. `Server.SpotInstanceTermination`. */
  stateReason?: string;
  /**
   * The provider will take the running instance away or it is unhealthy (aws: a scheduled event
   * such as instance-retirement, or failed status checks, from DescribeInstanceStatus).
   */
  degraded?: { reason: string; message: string };
}

/** What the agent reports about one attempt (status object in storage). */
export type AgentPhase =
  | 'starting'
  | 'syncing'
  | 'restoring'
  | 'installing'
  /** Set up and waiting at its start gate for the attempt before it to stop (prelaunched replacement). */
  | 'waiting'
  | 'training'
  | 'interrupting'
  | 'interrupted'
  | 'stopping'
  | 'stopped'
  | 'succeeded'
  | 'failed'
  | 'lost';

export interface CheckpointRef {
  /** Zero-padded sequence number, monotonically increasing within a generation. */
  id: string;
  /**
   * The training step the checkpoint *holds*: declared by the job (`RUNCTL_CHECKPOINT step=N` or
   * the marker file) or read from a recognised layout (`checkpoint-<N>/`, `…step=N….ckpt`).
   * Absent means unknown; never the progress printed at sync time (docs/checkpoints.md, issue 9).
   */
  step?: number;
  /** Where `step` came from: `marker`, `line`, `huggingface`, `lightning`. Absent with `step`. */
  stepSource?: CheckpointStepSource;
  /** Files (regular files) in the checkpoint. */
  files: number;
  /** Bytes of those files. */
  bytes: number;
  at: string;
  /** Files whose content this sync uploaded (new to storage). */
  uploaded?: number;
  /** Files whose content was already stored (by an earlier checkpoint of the run) and reused. */
  reused?: number;
  /** Bytes this sync uploaded. */
  uploadedBytes?: number;
}

/** How the step of a checkpoint was learned (docs/checkpoints.md, "Saying which step"). */
export type CheckpointStepSource = 'marker' | 'line' | 'huggingface' | 'lightning';

/**
 * The checkpoint an attempt restored, and why not a newer one. `fallbackFrom`/`reason` name the
 * newest checkpoint passed over; `avoided` lists every checkpoint newer than the one restored that was
 * passed over because of evidence against it (issue 9): an earlier attempt restored it, or published
 * it from the one it restored, and failed before publishing newer training state.
 */
export interface RestoredFrom {
  id: string;
  fallbackFrom?: string;
  reason?: string;
  generation?: number;
  avoided?: AvoidedCheckpoint[];
}

/**
 * A checkpoint not restored because of evidence against it (docs/checkpoints.md, "Falling back after
 * a failed resume"): an attempt restored it and failed before publishing newer training state, or
 * (`descendsFrom`) such an attempt published it from the checkpoint it restored.
 */
export interface AvoidedCheckpoint {
  id: string;
  /** The attempt that restored it (or, with descendsFrom, published it) and then failed. */
  attempt: number;
  /** How that attempt ended, e.g. `the job exited with code 1`. */
  reason: string;
  /** The checkpoint that attempt restored, when it published this one without newer training state. */
  descendsFrom?: string;
}

/**
 * How the final sync after a notice went, against the termination time the notice gave
 * (recorded once per attempt as an event by the reconciler).
 */
export interface FinalSyncReport {
  /** ISO time the notice said the instance would be reclaimed, when it said one. */
  terminationTime?: string;
  /** The checkpoint the final sync published (or found current), when there is one. */
  checkpoint?: string;
  /** Seconds between that checkpoint being safe in storage and the termination time. */
  safeSecondsBeforeTermination?: number;
  /** False when the final sync did not publish a checkpoint in time; `newest` is then what a resume gets. */
  safe: boolean;
  /** The newest published checkpoint after the final sync. */
  newest?: string;
  message: string;
}

/**
 * A fault the agent sees on the instance and reports while it lasts (the fault channel agreed for
 * issues 9 and 10). The reconciler turns each into a run condition of the same type (status True;
 * False once the agent stops listing it) and an event on each appearance.
 */
export interface AgentFault {
  /**
   * PascalCase condition type, e.g. MetadataServiceUnreachable, JobCrashedOnNotice,
   * CheckpointSyncFailing, CheckpointSyncStalled, SecretUnresolved, AgentRestarted.
   * docs/conditions.md lists each with what to do.
   */
  reason: string;
  /** One sentence for people that says what to do; secrets redacted by the agent. */
  message: string;
  /** ISO time the agent first saw this fault (kept while it lasts). */
  since: string;
  /** The file concerned, when there is one (e.g. a checkpoint file that cannot be read). */
  file?: string;
}

/**
 * A job's progress as the agent read it from the job's output (docs/progress.md, issue 13): a
 * `spec.progress.pattern` match, or a built-in format (tqdm bar, Hugging Face Trainer log dict,
 * Lightning bar, nanoGPT lines, `step=N/T loss=X`).
 */
export interface Progress {
  /**
   * The step as the job counts it: tqdm's `n`, the Trainer's global step, nanoGPT's `iter`, the
   * `step` group of the pattern. For Lightning's bar, the batch within the epoch (`metrics.epoch`
   * says which epoch), as the bar draws it.
   */
  step: number;
  /** The step count the bar runs to, when the job prints one (tqdm's total; per epoch for Lightning). */
  total?: number;
  /** The newest finite training loss printed (`loss`, `train_loss`, the pattern's `loss` group). */
  loss?: number;
  /**
   * The newest value of every other number printed alongside (learning_rate, grad_norm, epoch,
   * val_loss, mfu, the pattern's other named groups), by name; at most 32 names.
   */
  metrics?: Record<string, number>;
}

/**
 * One point of an attempt's progress history: the agent records one per step it sees (merging
 * what is printed at the same step), bounded in count by downsampling (docs/progress.md).
 */
export interface ProgressPoint {
  /** ISO time the agent read the step from the job's output. */
  time: string;
  /**
   * The step. Monotonic within one attempt's history: for a bar that restarts every epoch
   * (Lightning), the batches counted from the start of training (epoch × total + batch).
   */
  step: number;
  /** The bar's total at that point, when the job prints one. */
  total?: number;
  /** Numbers printed at that step, by name; includes `loss` when known. */
  metrics: Record<string, number>;
}

export interface AgentStatus extends AttemptKey {
  phase: AgentPhase;
  /** Monotonic per attempt; lets readers ignore stale writes. */
  seq: number;
  heartbeatAt: string;
  pid?: number;
  exitCode?: number;
  /** What the job last printed about its progress (docs/progress.md); absent until a step is seen. */
  progress?: Progress;
  lastCheckpoint?: CheckpointRef;
  /**
   * The checkpoint restored before the job started. fallbackFrom/reason are set when the newest
   * checkpoint failed verification and this older one was used; generation when it came from
   * the seed generation.
   */
  restoredFrom?: RestoredFrom;
  /** Every checkpoint kept in storage for this generation, oldest first, as of the last sync. */
  checkpoints?: CheckpointRef[];
  /** Set once the final sync after a notice or stop ran. */
  finalSync?: FinalSyncReport;
  /** When the agent started the training job (ISO 8601, the instance's clock): the ledger's "first trained". */
  jobStartedAt?: string;
  /** When the agent saw the interruption notice or the stop request and began stopping the job (ISO 8601, the instance's clock). */
  stoppingSince?: string;
  /**
   * Machine-readable cause of a `failed` phase the controller must not retry:
   * `NoCheckpointLeft` when every kept checkpoint was restored by an attempt that then failed.
   */
  failureReason?: 'NoCheckpointLeft';
  /** EC2 rebalance recommendation seen in IMDS (reported, not acted on). */
  rebalanceRecommendation?: { noticeTime?: string };
  /** The agent process writing this status. */
  agentPid?: number;
  /** Last lines of setup output while installing, and of the job output on failure. */
  logTail?: string[];
  message?: string;
  /** Why the attempt failed when it is not a plain exit: `Stalled` (spec.timeouts.stall). */
  reason?: string;
  /** Faults present now; an entry disappears when its fault clears. */
  faults?: AgentFault[];
  /** What the setup cache did for this attempt (spec.setup.cache), once setup is done or skipped. */
  setupCache?: SetupCacheReport;
}

/**
 * The setup cache's report for one attempt (src/agent/runctl_agent/setup_cache.py, issue 12).
 * `restored`: setup was skipped; `rebuilt`: setup ran and (when `stored`) its output was kept;
 * `unavailable`: the cache could not be used (a key file missing) and setup ran. Seconds are
 * wall-clock seconds on the instance.
 */
export interface SetupCacheReport {
  result: 'restored' | 'rebuilt' | 'unavailable';
  /** sha256 (hex) of the setup command, key files' content, image and architecture. */
  key?: string;
  /** restored: seconds the restore took. */
  seconds?: number;
  /** The duration of the setup run: the one that built the cache (restored) or this one (rebuilt). */
  setupSeconds?: number;
  /** restored: setupSeconds minus the restore's seconds. */
  savedSeconds?: number;
  /** rebuilt: why the cache was not restored: `miss`, `missing` (archive gone), `corrupt`, `unavailable`. */
  missed?: 'miss' | 'missing' | 'corrupt' | 'unavailable';
  reason?: string;
  /** rebuilt: whether the output was stored for later attempts; `error` says why not. */
  stored?: boolean;
  error?: string;
  /** Bytes of the archive (compressed). */
  bytes?: number;
  archiveSeconds?: number;
  /** sha256 of the archive (`setup-cache/archives/<sha256>.tar.gz`). */
  archive?: string;
  builtBy?: { run?: string; generation?: number; attempt?: number };
  message: string;
}

/**
 * A published checkpoint (MANIFEST.json, written last). Format 2 (issue 9, docs/checkpoints.md
 * "How checkpoints are stored"): the files' bytes live once per run in the content store
 * (layout.contentKey(run, sha256, uid)); format 1 (no `format` field, written before issue 9)
 * keeps them beside the manifest in its folder, and still restores.
 */
export interface CheckpointManifest {
  format?: 2;
  id: string;
  run: string;
  generation: number;
  attempt: number;
  /** The step the checkpoint holds, when known (see CheckpointRef.step). */
  step?: number;
  stepSource?: CheckpointStepSource;
  createdAt: string;
  /** size in bytes; mode = permission bits, e.g. 0o644 (format 2). */
  files: { path: string; size: number; sha256: string; mode?: number }[];
  /** Every folder below the checkpoint root, empty ones included (format 2). */
  dirs?: { path: string; mode: number }[];
  /** Symbolic links that stay inside the folder, target as the job wrote it (format 2). */
  symlinks?: { path: string; target: string }[];
  /** What the sync that published it moved: files and bytes uploaded vs already stored (format 2). */
  sync?: { filesUploaded: number; filesReused: number; bytesUploaded: number; bytesReused: number };
}

export interface LogChunk {
  attempt: number;
  /** Opaque cursor to pass back to continue reading after this chunk. */
  cursor: string;
  text: string;
}

export interface LogReadOptions {
  /** Skip segments stored before this time. */
  since?: Date;
}

/** Why the controller asks an agent to checkpoint and stop its job. */
export type StopReason = 'suspend' | 'delete' | 'new-generation' | 'timeout' | 'budget';

export interface DeployRequest extends AttemptKey {
  spec: RunSpec;
  instance: InstanceRef;
  /** Absolute path of the repository root that code.path is relative to. */
  repoRoot: string;
  /** Restore from this generation's checkpoints when the attempt's own generation has none. */
  seedGeneration?: number;
  /**
   * Start the agent with its start gate closed: it fetches the code and runs setup, then waits
   * (phase `waiting`) until openStartGate() before restoring the checkpoint and starting the job.
   * For a replacement launched during the interrupted attempt's notice (issue 12).
   */
  startGate?: boolean;
}

/** What deployAgent did that the run's record should keep. */
export interface DeployReport {
  /** sha256 of the content-addressed code bundle the attempt runs (`bundles/<sha256>.tar.gz` in storage). */
  codeBundle?: string;
}

/** A problem with a spec that only the cloud can tell (e.g. an instance type not offered there). */
export interface PreflightProblem {
  /** Field path, e.g. ['spec', 'resources', 'instanceTypes', 1]. */
  path: Segment[];
  message: string;
  severity: 'error' | 'warning';
  /**
   * Where to report instead when `path` is not written in the file (its value is a default): e.g. a
   * root snapshot larger than the default rootVolumeGiB is reported at spec.resources.image.
   */
  orAt?: Segment[];
}

/** One run as `runctl doctor` checks it. */
export interface DoctorTarget {
  run: string;
  spec: RunSpec;
}

/** pass: verified; warn: works, but not as well as it could, or could not be verified; fail: a run would fail. */
export type DoctorStatus = 'pass' | 'warn' | 'fail';

/** The result of one `runctl doctor` check: one line of its output. */
export interface DoctorCheck {
  /** What kind of check, e.g. `credentials`, `bucket`, `probe`, `instance-profile`, `role-storage`, `quota`. */
  check: string;
  /** What was checked: a region, `s3://bucket/prefix`, an instance profile, an image, a quota. */
  subject: string;
  status: DoctorStatus;
  /** What was found, in a sentence. */
  message: string;
  /** For warn and fail: what to do (an IAM statement, a CLI command, the quota to request). */
  fix?: string;
  /** The runs this check concerns. */
  runs: string[];
}

export interface BundlePruneResult {
  /** Storage keys deleted. */
  deleted: string[];
  /** Bundles kept: referenced, too young, or not of runctl's key shape. */
  kept: number;
}

export interface Provider {
  readonly name: string;
  /** How often the reconciler should look again at a run that is in flight. */
  readonly pollIntervalMs: number;
  /**
   * How often it looks while a spot attempt trains or is being interrupted, when shorter than
   * pollIntervalMs: the notice reaches the controller through the agent's status, and every
   * second of that wait delays the replacement's launch and its start gate (issue 12).
   */
  readonly noticePollIntervalMs?: number;
  /** One batched observation of every instance this controller owns, grouped by run name. */
  observe(runs: string[]): Promise<Map<string, InstanceObservation[]>>;
  /** Launch (or adopt, if one already exists for this attempt) an instance. */
  launch(req: LaunchRequest): Promise<LaunchResult>;
  /** Bundle and ship the code, install and start the agent detached. Adopts a running agent. */
  deployAgent(req: DeployRequest): Promise<DeployReport | void>;
  /** The agent's newest status object for an attempt, or undefined if it has written none. */
  readAgentStatus(key: AttemptKey, spec: RunSpec): Promise<AgentStatus | undefined>;
  /**
   * The progress history the attempt's agent keeps in storage (`<attempt prefix>/progress.json`,
   * src/agent/layout.ts), oldest point first; undefined when the agent has written none (the job
   * printed no progress yet, or an agent older than issue 13). Throws RetryableError when it cannot
   * be read now. Optional: a provider without storage leaves it out (no history is shown).
   */
  readProgressHistory?(key: AttemptKey, spec: RunSpec): Promise<ProgressPoint[] | undefined>;
  /** Ask the agent to signal the job, wait its grace period, sync a checkpoint and stop. */
  requestStop(key: AttemptKey, spec: RunSpec, reason: StopReason): Promise<void>;
  /**
   * Open the attempt's start gate (a `gate.json` object in the attempt's storage prefix): its agent,
   * deployed with `startGate`, then restores the latest checkpoint and starts the job. Idempotent;
   * opening a gate before the agent is deployed is harmless (it finds it open).
   */
  openStartGate(key: AttemptKey, spec: RunSpec): Promise<void>;
  /** Deliver a (simulated) spot interruption notice to the attempt's instance. */
  deliverSpotNotice(key: AttemptKey, instanceId: string): Promise<void>;
  /**
   * Terminate an instance. Succeeds if it is already gone. `launchedAt` (ISO time), when known,
   * lets a provider whose API is eventually consistent tell "gone" from "not visible yet".
   */
  terminate(instanceId: string, opts?: { launchedAt?: string }): Promise<void>;
  /** Newest checkpoint whose manifest is published, for a run's generation. */
  latestCheckpoint(run: string, generation: number, spec: RunSpec, uid?: string): Promise<CheckpointManifest | undefined>;
  /**
   * Log text of an attempt from storage, starting after `cursor`; at most a bounded amount per
   * call (empty text: nothing more yet). `since` skips log segments stored before that time
   * (segments are shipped every agent heartbeat, so that is the precision).
   */
  readLogs(key: AttemptKey, spec: RunSpec, cursor?: string, opts?: LogReadOptions): Promise<LogChunk>;
  /**
   * Tells the provider which spec a run has, before observe() is asked about it. Providers whose
   * observation depends on the spec (aws: the run's region) use it; others may leave it out.
   */
  track?(run: string, spec: RunSpec): void;
  /**
   * Checks against the cloud what validation cannot know, before anything is launched (`plan`,
   * `apply`). Read-only. Throws when it cannot ask (credentials, permissions, network).
   */
  preflight?(spec: RunSpec): Promise<PreflightProblem[]>;
  /**
   * Checks, for `runctl doctor`, that the account is ready for these runs: credentials, storage,
   * instance profile and its role, image, network, quotas. Read-only except for one probe object
   * per storage location, which it deletes. Never throws for a failed check: each becomes a
   * DoctorCheck with status fail (or warn when it could not be made for lack of a read permission).
   */
  doctor?(targets: DoctorTarget[]): Promise<DoctorCheck[]>;
  /**
   * Delete the code bundles in `spec`'s storage that are not in `referenced` (sha256s) and were
   * stored more than `minAgeMs` ago. Only keys of runctl's own `bundles/<sha256>.tar.gz` shape.
   */
  pruneBundles?(spec: RunSpec, referenced: ReadonlySet<string>, opts: { minAgeMs: number }): Promise<BundlePruneResult>;
  /**
   * Delete setup cache entries in `spec`'s storage whose key is not in `referenced` (cache keys,
   * sha256 hex), then archives no kept entry names, each stored more than `minAgeMs` ago. Only keys
   * of runctl's own `setup-cache/<key>.json` and `setup-cache/archives/<sha256>.tar.gz` shapes.
   */
  pruneSetupCaches?(spec: RunSpec, referenced: ReadonlySet<string>, opts: { minAgeMs: number }): Promise<BundlePruneResult>;
  /**
   * Every instance this controller owns, of any run (for the orphan sweep). Read-only. Providers
   * that cannot list their instances leave it out. `oneShot` (plan): nothing retries the listing
   * later, so a transient failure's message must not promise a retry.
   */
  listOwned?(opts?: { oneShot?: boolean }): Promise<InstanceObservation[]>;
  /**
   * The prices of an instance over `[from, to]` (ISO times; `to` is now for a live instance):
   * the billed price steps and the on-demand price of its type (InstancePrice). A price the
   * provider cannot have (permission, no offer) comes back as `unknown` with the reason; throws
   * RetryableError only for a transient failure (the reconciler asks again on a later pass).
   */
  priceInstance?(instance: InstanceRef, window: { from: string; to: string }, spec: RunSpec): Promise<InstancePrice>;
  /**
   * The hourly price of each way the spec may run (`plan`): one quote per market/type/zone rung,
   * spot at its current price and on-demand from the price list. Read-only; prices it cannot have
   * come back with `unknown`. Throws only when it cannot ask at all.
   */
  quoteSpec?(spec: RunSpec): Promise<RungQuote[]>;
  /** Release resources held by the provider object (servers, clients). */
  close?(): Promise<void>;
}

/** The hourly price of one rung of a spec's ladder, for `plan`. */
export interface RungQuote {
  market: MarketKind;
  instanceType: string;
  /** Zone, for spot (its price is per zone); absent for on-demand (one price per region). */
  zone?: string;
  usdPerHour?: number;
  unknown?: string;
  source: string;
}

// Error classes the reconciler acts on. Providers translate their native errors into these.

export class ProviderError extends Error {
  /** Provider request id (e.g. AWS x-amzn-RequestId), for the event log. */
  requestId?: string;
  code?: string;
  constructor(message: string, opts: { code?: string; requestId?: string; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = new.target.name;
    this.code = opts.code;
    this.requestId = opts.requestId;
  }
}

/** Throttling, 5xx, network: try the same thing again after a bounded backoff. */
export class RetryableError extends ProviderError {}

/**
 * No rung of the ladder can launch right now, for a reason that passes with time: retry later,
 * until the provisioning deadline. `reason` is the condition reason the run shows while it waits:
 * `InsufficientCapacity` (EC2 has none), `QuotaExceeded` (an account or subnet quota refused every
 * rung left; recently terminated instances still count for a while, per the EC2 user guide), or
 * `InstanceProfileNotReady` (IAM is eventually consistent: a new profile is refused for seconds).
 */
export class CapacityError extends ProviderError {
  readonly reason: string;
  constructor(message: string, opts: { code?: string; requestId?: string; cause?: unknown; reason?: string } = {}) {
    super(message, opts);
    this.reason = opts.reason ?? 'InsufficientCapacity';
  }
}

/** Will not succeed by retrying (quota, permission, invalid parameter): the message says what to do. */
export class TerminalError extends ProviderError {}
