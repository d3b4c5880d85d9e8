// Checks the schema cannot express: duration bounds, rules that depend on the provider or on
// another field, the code directory on disk, and hints about likely mistakes (as warnings).
import type { CodePathChecker } from './code-path.js';
import { formatDuration, parseDuration } from './duration.js';
import type { Segment } from './field-path.js';
import { checkNotifications } from './notification-checks.js';
import { error, warning, type Problem } from './problem.js';
import { ProgressPatternError, translateProgressPattern } from './progress-pattern.js';
import { checkCodeInclude, checkSetupCache } from './setup-checks.js';

const SECOND = 1000;
const HOUR = 3600 * SECOND;
const DAY = 24 * HOUR;

/** Accepted range of every duration field, inclusive. */
export const DURATION_BOUNDS: ReadonlyArray<{ path: Segment[]; min: number; max: number }> = [
  { path: ['spec', 'checkpoints', 'syncInterval'], min: SECOND, max: DAY },
  { path: ['spec', 'checkpoints', 'gracePeriod'], min: SECOND, max: HOUR },
  { path: ['spec', 'timeouts', 'provisioning'], min: SECOND, max: DAY },
  { path: ['spec', 'timeouts', 'installing'], min: SECOND, max: DAY },
  { path: ['spec', 'timeouts', 'training'], min: SECOND, max: 30 * DAY },
  { path: ['spec', 'timeouts', 'stall'], min: SECOND, max: 7 * DAY },
  { path: ['spec', 'rehearsal', 'interruptAfter'], min: SECOND, max: 30 * DAY },
];

/** AWS gives two minutes between a spot interruption notice and reclaiming the instance. */
const SPOT_NOTICE_MS = 2 * 60 * SECOND;

const DURATION = /^(?:[0-9]+(?:\.[0-9]+)?(?:ms|s|m|h|d))+$/;
const REGION = /^[a-z]{2}(?:-gov|-iso[a-z]?)?-[a-z]+-[0-9]+$/;
const ZONE = /^[a-z]{2}(?:-gov|-iso[a-z]?)?-[a-z]+-[0-9]+(?:-[a-z]+-[0-9]+)?[a-z]$/;
const CREDENTIAL_NAME = /(?:^|_)(?:TOKEN|SECRET|PASSWORD|PASSWD|PRIVATE_KEY|API_KEY|ACCESS_KEY|SECRET_KEY|CREDENTIALS?)(?:$|_)/i;
const AWS_ONLY_RESOURCES = ['instanceTypes', 'maxSpotPrice', 'region', 'availabilityZones', 'image', 'iamInstanceProfile', 'subnetId', 'securityGroupIds', 'market', 'rootVolumeGiB'];

type Obj = Record<string, unknown>;

function obj(value: unknown): Obj | undefined {
  return value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as Obj) : undefined;
}

function str(value: unknown): string | undefined {
  return typeof value === 'string' ? value : undefined;
}

export interface CheckInput {
  /** The document after schema defaults and project defaults. */
  data: unknown;
  /** Keys of spec.resources written in the file itself (not defaulted). */
  explicitResourceKeys: ReadonlySet<string>;
  codePaths: CodePathChecker;
}

export function checkRun({ data, explicitResourceKeys, codePaths }: CheckInput): Problem[] {
  const problems: Problem[] = [];
  const spec = obj(obj(data)?.spec);
  if (!spec) return problems;
  const resources = obj(spec.resources) ?? {};
  const checkpoints = obj(spec.checkpoints) ?? {};
  const provider = str(spec.provider);

  checkDurations(spec, problems);
  problems.push(...checkNotifications(spec.notifications, ['spec', 'notifications']));
  checkProgressPattern(obj(spec.progress), problems);

  const market = str(resources.market);
  if (typeof resources.maxSpotPrice === 'number' && market === 'on-demand') {
    problems.push(
      error(['spec', 'resources', 'maxSpotPrice'], 'only applies to a spot market, and market is on-demand: remove it, or use market spot or spot-then-on-demand'),
    );
  }

  checkPrelaunch(obj(spec.recovery) ?? {}, market, problems);

  if (provider === 'aws') checkAws(resources, checkpoints, problems);
  if (provider === 'local') checkLocal(checkpoints, problems);
  if (provider === 'local') {
    for (const key of AWS_ONLY_RESOURCES) {
      if (explicitResourceKeys.has(key)) problems.push(warning(['spec', 'resources', key], 'is ignored by provider local', 'key'));
    }
  }

  checkEnvironment(obj(spec.env) ?? {}, obj(spec.secrets) ?? {}, problems);

  const dir = str(checkpoints.dir);
  if (dir !== undefined && dir.startsWith('/')) {
    if (dir.split('/').includes('..')) problems.push(error(['spec', 'checkpoints', 'dir'], `must not contain ".." (got ${JSON.stringify(dir)})`));
    else if (/^\/+$/.test(dir)) problems.push(error(['spec', 'checkpoints', 'dir'], 'must not be the root directory: use a directory of its own, e.g. /opt/runctl/checkpoints'));
  }

  const codePath = str(obj(spec.code)?.path);
  if (codePath) {
    const message = codePaths.check(codePath);
    if (message) problems.push(error(['spec', 'code', 'path'], message));
  }
  checkCodeInclude(spec, problems);
  checkSetupCache(spec, codePaths, problems);
  return problems;
}

/**
 * recovery.prelaunchOnRebalance launches the replacement early, so it needs prelaunch in effect:
 * prelaunch set to true, or left out on a spot market (its default there: prelaunchDefault in
 * src/reconciler/prelaunch.ts; issue 12).
 */
function checkPrelaunch(recovery: Obj, market: string | undefined, problems: Problem[]): void {
  if (recovery.prelaunchOnRebalance !== true) return;
  const at: Segment[] = ['spec', 'recovery', 'prelaunchOnRebalance'];
  if (recovery.prelaunch === false) {
    problems.push(error(at, 'needs recovery.prelaunch, which is set to false: set it to true (or leave it out on a spot market, where it is on by default), or remove prelaunchOnRebalance'));
  } else if (recovery.prelaunch === undefined && market === 'on-demand') {
    problems.push(
      error(at, 'needs recovery.prelaunch, which is off by default for market on-demand: set recovery.prelaunch: true, use market spot or spot-then-on-demand, or remove prelaunchOnRebalance'),
    );
  }
}

/** Specs in one folder repeat the same few durations; each is parsed once. */
const parsedDurations = new Map<string, number>();

function durationMs(text: string): number {
  let ms = parsedDurations.get(text);
  if (ms === undefined) {
    ms = parseDuration(text);
    if (parsedDurations.size < 10_000) parsedDurations.set(text, ms);
  }
  return ms;
}

function checkDurations(spec: Obj, problems: Problem[]): void {
  const parsed = new Map<string, number>();
  for (const { path, min, max } of DURATION_BOUNDS) {
    const value = str(obj(spec[path[1] as string])?.[path[2] as string]);
    if (value === undefined || !DURATION.test(value)) continue;
    const ms = durationMs(value);
    parsed.set(path.join('.'), ms);
    if (ms <= 0) problems.push(error(path, `must be positive (got ${JSON.stringify(value)})`));
    else if (ms < min) problems.push(error(path, `must be at least ${formatDuration(min)} (got ${JSON.stringify(value)})`));
    else if (ms > max) problems.push(error(path, `must be at most ${formatDuration(max)} (got ${JSON.stringify(value)})`));
  }
  const rehearsal = parsed.get('spec.rehearsal.interruptAfter');
  const training = parsed.get('spec.timeouts.training');
  if (rehearsal !== undefined && training !== undefined && rehearsal >= training) {
    problems.push(
      warning(['spec', 'rehearsal', 'interruptAfter'], `is not shorter than timeouts.training (${formatDuration(training)}), so the rehearsal never happens`),
    );
  }
}

function checkLocal(checkpoints: Obj, problems: Problem[]): void {
  const storage = str(checkpoints.storage);
  if (storage?.startsWith('s3://')) {
    problems.push(
      error(
        ['spec', 'checkpoints', 'storage'],
        `must be a file:///absolute/path URL for provider local, which keeps storage in a folder (got ${JSON.stringify(storage)}); leave it out to use .runctl/local/storage`,
      ),
    );
  }
}

function checkAws(resources: Obj, checkpoints: Obj, problems: Problem[]): void {
  const region = str(resources.region);
  if (region === undefined) {
    problems.push(error(['spec', 'resources', 'region'], 'is required for provider aws (or set defaults.region in runctl.yaml)'));
  }
  const storage = str(checkpoints.storage);
  if (storage === undefined) {
    problems.push(
      error(['spec', 'checkpoints', 'storage'], 'is required for provider aws: s3://bucket/prefix for checkpoints, logs and status (or set defaults.storage in runctl.yaml)'),
    );
  } else if (storage.startsWith('file://')) {
    problems.push(error(['spec', 'checkpoints', 'storage'], `must be an s3:// URI for provider aws (got ${JSON.stringify(storage)})`));
  }
  if (resources.image === undefined) {
    problems.push(
      error(['spec', 'resources', 'image'], 'is required for provider aws: an AMI id (ami-…) or an SSM parameter path such as /aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64'),
    );
  }
  if (resources.iamInstanceProfile === undefined) {
    problems.push(
      error(['spec', 'resources', 'iamInstanceProfile'], 'is required for provider aws: an instance profile whose role allows SSM and the storage bucket (or set defaults.iamInstanceProfile in runctl.yaml)'),
    );
  }
  if (Array.isArray(resources.instanceTypes) && resources.instanceTypes.length === 0) {
    problems.push(error(['spec', 'resources', 'instanceTypes'], 'is required for provider aws: list at least one instance type, e.g. [g5.xlarge]'));
  }
  const zones = Array.isArray(resources.availabilityZones) ? resources.availabilityZones : [];
  if (region !== undefined && REGION.test(region)) {
    zones.forEach((zone, i) => {
      if (typeof zone === 'string' && ZONE.test(zone) && !(zone.startsWith(region) && /^[a-z-]/.test(zone.slice(region.length)))) {
        problems.push(error(['spec', 'resources', 'availabilityZones', i], `is not in region ${region} (got ${JSON.stringify(zone)})`));
      }
    });
  }
  if (zones.length > 0 && typeof resources.subnetId === 'string') {
    problems.push(warning(['spec', 'resources', 'availabilityZones'], 'is ignored when subnetId is set: the subnet decides the zone', 'key'));
  }
  const grace = str(checkpoints.gracePeriod);
  if (grace !== undefined && DURATION.test(grace) && resources.market !== 'on-demand' && durationMs(grace) > SPOT_NOTICE_MS) {
    problems.push(
      warning(['spec', 'checkpoints', 'gracePeriod'], `is longer than the 2-minute spot interruption notice; on spot the instance may be reclaimed before ${grace} have passed`),
    );
  }
}

function checkEnvironment(env: Obj, secrets: Obj, problems: Problem[]): void {
  for (const name of Object.keys(secrets)) {
    if (Object.hasOwn(env, name)) {
      problems.push(error(['spec', 'secrets', name], 'is also set in spec.env: take each variable from one place', 'key'));
    }
  }
  for (const [where, vars] of [['env', env], ['secrets', secrets]] as const) {
    for (const name of Object.keys(vars)) {
      if (name.toUpperCase().startsWith('RUNCTL_')) {
        problems.push(error(['spec', where, name], 'uses the RUNCTL_ prefix, which is reserved for the variables runctl sets', 'key'));
      }
    }
  }
  for (const [name, value] of Object.entries(env)) {
    if (typeof value !== 'string' || value === '') continue;
    if (value.startsWith('ssm:/')) {
      problems.push(warning(['spec', 'env', name], 'looks like a secret reference, but spec.env passes it as plain text; move it to spec.secrets', 'key'));
    } else if (CREDENTIAL_NAME.test(name)) {
      problems.push(warning(['spec', 'env', name], 'looks like a credential in plain text; put it in SSM and reference it from spec.secrets (ssm:/…)', 'key'));
    }
  }
}

/** spec.progress.pattern must translate to Python with the same meaning (src/spec/progress-pattern.ts). */
function checkProgressPattern(progress: Obj | undefined, problems: Problem[]): void {
  const pattern = str(progress?.pattern);
  if (pattern === undefined) return;
  try {
    translateProgressPattern(pattern);
  } catch (err) {
    if (!(err instanceof ProgressPatternError)) throw err;
    problems.push(error(['spec', 'progress', 'pattern'], `${err.message}; docs/progress.md lists what a pattern may use`));
  }
}
