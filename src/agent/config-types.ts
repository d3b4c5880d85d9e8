// The JSON document the agent reads at start (`runctl-agent.py --config FILE`). Rendered by
// src/agent/config.ts from a run's spec; the same document for every provider.
export interface AgentConfig {
  run: string;
  /** The run incarnation; absent for a run recorded before uids (storage prefix without it). */
  uid?: string;
  generation: number;
  attempt: number;
  /** True when a checkpoint may exist to resume from (attempt > 1, or seeded). */
  resuming: boolean;
  /** `file:///abs/dir` or `s3://bucket/prefix`. */
  storage: string;
  /** S3 endpoint override for the AWS CLI (tests, S3-compatible stores); path-style implied. */
  s3EndpointUrl?: string;
  /** SSM endpoint override for resolving `ssm:` secrets with the AWS CLI (tests). */
  ssmEndpointUrl?: string;
  region?: string;
  /** Storage key of the code bundle (bundles/<sha>.tar.gz). */
  bundleKey: string;
  /** Where the agent keeps its own state (pid files, exit code, local logs). */
  stateDir: string;
  /** Where the bundle is unpacked; the job's working directory. */
  workDir: string;
  checkpointDir: string;
  setup?: string;
  /**
   * spec.setup.cache: after setup succeeds the agent archives `paths` (relative to workDir) into
   * storage under a key made of the setup command, the content of the `key` files (relative to
   * workDir), the image and the architecture, and restores them instead of running setup when that
   * key was stored before (src/agent/runctl_agent/setup_cache.py).
   */
  setupCache?: { paths: string[]; key: string[] };
  command: string;
  env: Record<string, string>;
  /** Env var name -> `ssm:/path`; resolved by the agent with the AWS CLI, never written anywhere. */
  secrets: Record<string, string>;
  syncIntervalSeconds: number;
  keep: number;
  signal: string;
  /**
   * `main`: the signal goes to the job's main process (the `run` command, or the command a `run`
   * shell script runs); `group`: to its whole process group. SIGKILL to the group when the grace
   * period ends either way. Absent means `main`.
   */
  signalScope: 'main' | 'group';
  gracePeriodSeconds: number;
  /** spec.timeouts.stall: no job output for this many seconds stops the job and fails the attempt (Stalled). */
  stallSeconds?: number;
  /** IMDSv2-compatible base URL, e.g. http://169.254.169.254 */
  imdsUrl: string;
  heartbeatSeconds: number;
  noticePollSeconds: number;
  /** Restore from this generation's checkpoints when this generation has none yet. */
  seedGeneration?: number;
  /**
   * Seconds a stored checkpoint content stays protected after the last manifest naming it is
   * retired, so a sync in another agent that reuses it can publish first (docs/checkpoints.md,
   * "How checkpoints are stored"). Default 3600; 0 only where one agent alone writes the run
   * (tests, benches). Not rendered from the spec.
   */
  contentGraceSeconds?: number;
  /**
   * spec.progress.pattern translated to Python `re` syntax (src/spec/progress-pattern.ts), compiled
   * by the agent with re.ASCII; absent: the built-in formats (docs/progress.md).
   */
  progressPattern?: string;
}
