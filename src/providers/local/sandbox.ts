// A local "instance" is a sandbox folder under `<root>/instances/<instanceId>/`:
//
//   tags.json                     runctl:run, runctl:uid, runctl:generation, runctl:attempt, runctl:controller
//   instance.json                 the InstanceRef (type, market, launchedAt, ...)
//   groups/<pgid>.json            every process group started in the sandbox (host, agents)
//   host.json                     written by the instance host once its IMDS endpoint listens
//   host.log                      the instance host's own output
//   imds/instance-action.json     a delivered spot notice (served by the host's IMDS)
//   shutdown.json                 the instance is shutting down (host or terminate() is stopping it)
//   terminated.json               the instance is gone: when, why, and any spot interruption
//   agent-config.json, agent.out  the agent's config and its stdout/stderr
//   agent/                        the agent's stateDir (pid files, job.log, result.json)
//   work/                         the agent's workDir (the unpacked code bundle)
//   fs/<abs path>                 instance paths such as checkpoints.dir, mapped into the sandbox
//
// This module knows the layout and reads/writes the small records; it starts no processes.
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { AttemptKey, InstanceRef, MarketKind } from '../types.js';
import { createJsonExclusive, errnoCode, readJsonIfPresent, writeJsonAtomic } from './fs-util.js';
import type { GroupRecord } from './processes.js';

export const TAG_RUN = 'runctl:run';
/** The run incarnation (src/state/identity.ts); absent on sandboxes of runs recorded before uids. */
export const TAG_UID = 'runctl:uid';
export const TAG_GENERATION = 'runctl:generation';
export const TAG_ATTEMPT = 'runctl:attempt';
export const TAG_CONTROLLER = 'runctl:controller';

/** Inherited by every process of a sandbox; how a sweep finds processes that left their group. */
export const INSTANCE_ENV = 'RUNCTL_LOCAL_INSTANCE';

export const SPOT_TERMINATION_REASON = 'Server.SpotInstanceTermination';

export type Tags = Record<string, string>;

export interface HostRecord {
  pid: number;
  startTime?: string;
  port: number;
  imdsUrl: string;
  startedAt: string;
}

export interface NoticeRecord {
  action: 'terminate' | 'stop' | 'hibernate';
  /** When the instance will be taken away (ISO 8601, seconds precision, like IMDS). */
  time: string;
  /** When the notice was delivered. */
  noticedAt: string;
}

export interface ProcessGroupRecord extends GroupRecord {
  role: 'host' | 'agent';
  startedAt: string;
}

export interface TerminatedRecord {
  at: string;
  stateReason: string;
  spotInterruption?: { noticedAt: string; reason: string };
}

export interface ShutdownRecord {
  at: string;
  by: 'host' | 'terminate' | 'observe';
}

const RUN_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const INSTANCE_ID = /^local-[a-z0-9-]+-g\d+-a\d+-[0-9a-f]{6,}$/;

export function isInstanceId(id: string): boolean {
  return INSTANCE_ID.test(id) && id.length <= 160;
}

export function isRunName(run: string): boolean {
  return RUN_NAME.test(run) && run.length <= 63;
}

/**
 * `local-<run>-g<gen>-a<attempt>-<hex>`: the hex starts with the first 8 digits of the run's uid
 * (when it has one), so a sandbox folder says which incarnation it belongs to.
 */
export function newInstanceId(key: AttemptKey): string {
  return `${instanceIdPrefix(key)}${key.uid ? key.uid.slice(0, 8) : ''}${randomBytes(4).toString('hex')}`;
}

/** Every instance id of the attempt starts with this (legacy and uid-carrying ids alike). */
export function instanceIdPrefix(key: AttemptKey): string {
  return `local-${key.run}-g${key.generation}-a${key.attempt}-`;
}

/** Same run incarnation, generation and attempt (uid included: undefined only matches undefined). */
export function sameAttempt(a: AttemptKey, b: AttemptKey): boolean {
  return a.run === b.run && a.uid === b.uid && a.generation === b.generation && a.attempt === b.attempt;
}

export function describeAttempt(key: AttemptKey): string {
  return `${key.run}${key.uid ? ` (uid ${key.uid})` : ''} generation ${key.generation} attempt ${key.attempt}`;
}

export function attemptTags(key: AttemptKey, controller: string): Tags {
  return {
    [TAG_RUN]: key.run,
    ...(key.uid ? { [TAG_UID]: key.uid } : {}),
    [TAG_GENERATION]: String(key.generation),
    [TAG_ATTEMPT]: String(key.attempt),
    [TAG_CONTROLLER]: controller,
    Name: `runctl-${key.run}-g${key.generation}-a${key.attempt}`,
  };
}

export function attemptFromTags(tags: Tags | undefined): AttemptKey | undefined {
  if (!tags) return undefined;
  const run = tags[TAG_RUN];
  const generation = Number(tags[TAG_GENERATION]);
  const attempt = Number(tags[TAG_ATTEMPT]);
  if (!run || !Number.isInteger(generation) || !Number.isInteger(attempt)) return undefined;
  const uid = tags[TAG_UID];
  return uid ? { run, uid, generation, attempt } : { run, generation, attempt };
}

export function marketFor(specMarket: string): MarketKind {
  return specMarket === 'on-demand' ? 'on-demand' : 'spot';
}

/** Paths of one sandbox. */
export class Sandbox {
  constructor(
    readonly dir: string,
    readonly id: string,
  ) {}

  get tagsFile(): string {
    return path.join(this.dir, 'tags.json');
  }
  get instanceFile(): string {
    return path.join(this.dir, 'instance.json');
  }
  get groupsDir(): string {
    return path.join(this.dir, 'groups');
  }
  get hostFile(): string {
    return path.join(this.dir, 'host.json');
  }
  get hostLog(): string {
    return path.join(this.dir, 'host.log');
  }
  get imdsDir(): string {
    return path.join(this.dir, 'imds');
  }
  get noticeFile(): string {
    return path.join(this.imdsDir, 'instance-action.json');
  }
  get rebalanceFile(): string {
    return path.join(this.imdsDir, 'rebalance.json');
  }
  get shutdownFile(): string {
    return path.join(this.dir, 'shutdown.json');
  }
  get terminatedFile(): string {
    return path.join(this.dir, 'terminated.json');
  }
  get agentConfigFile(): string {
    return path.join(this.dir, 'agent-config.json');
  }
  get agentOut(): string {
    return path.join(this.dir, 'agent.out');
  }
  get stateDir(): string {
    return path.join(this.dir, 'agent');
  }
  get workDir(): string {
    return path.join(this.dir, 'work');
  }
  get fsRoot(): string {
    return path.join(this.dir, 'fs');
  }

  /** Where an absolute instance path (e.g. checkpoints.dir) lives inside the sandbox. */
  instancePath(absolute: string): string {
    if (!path.posix.isAbsolute(absolute)) throw new Error(`"${absolute}" is not an absolute path`);
    const mapped = path.join(this.fsRoot, ...path.posix.normalize(absolute).split('/').filter(Boolean));
    if (mapped !== this.fsRoot && !mapped.startsWith(this.fsRoot + path.sep)) throw new Error(`"${absolute}" leaves the sandbox`);
    return mapped;
  }

  tags(): Promise<Tags | undefined> {
    return readJsonIfPresent<Tags>(this.tagsFile);
  }
  instance(): Promise<InstanceRef | undefined> {
    return readJsonIfPresent<InstanceRef>(this.instanceFile);
  }
  host(): Promise<HostRecord | undefined> {
    return readJsonIfPresent<HostRecord>(this.hostFile);
  }
  notice(): Promise<NoticeRecord | undefined> {
    return readJsonIfPresent<NoticeRecord>(this.noticeFile);
  }
  shutdown(): Promise<ShutdownRecord | undefined> {
    return readJsonIfPresent<ShutdownRecord>(this.shutdownFile);
  }
  terminated(): Promise<TerminatedRecord | undefined> {
    return readJsonIfPresent<TerminatedRecord>(this.terminatedFile);
  }

  async groups(): Promise<ProcessGroupRecord[]> {
    let names: string[];
    try {
      names = await fs.readdir(this.groupsDir);
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return [];
      throw err;
    }
    const records = await Promise.all(
      names.filter((n) => /^\d+\.json$/.test(n)).map((n) => readJsonIfPresent<ProcessGroupRecord>(path.join(this.groupsDir, n))),
    );
    return records.filter((r): r is ProcessGroupRecord => r !== undefined && Number.isInteger(r.pgid));
  }

  async recordGroup(record: ProcessGroupRecord): Promise<void> {
    await fs.mkdir(this.groupsDir, { recursive: true });
    await writeJsonAtomic(path.join(this.groupsDir, `${record.pgid}.json`), record);
  }

  /** Process groups the agent recorded in its stateDir (see the agent script's header): job and setup. */
  async agentGroups(): Promise<GroupRecord[]> {
    const out: GroupRecord[] = [];
    for (const name of ['job.json', 'setup.json']) {
      const rec = await readJsonIfPresent<{ pgid?: number; startTime?: string | null }>(path.join(this.stateDir, name));
      if (rec && Number.isInteger(rec.pgid)) out.push({ pgid: rec.pgid as number, startTime: rec.startTime ?? undefined });
    }
    // job.pgid, and the pids the job's and setup's wrappers write themselves (group leaders), cover
    // an agent killed between starting a child and recording it.
    for (const name of ['job.pgid', 'job.pid', 'setup.pid']) {
      try {
        const pgid = Number((await fs.readFile(path.join(this.stateDir, name), 'utf8')).trim());
        if (Number.isInteger(pgid) && pgid > 1 && !out.some((g) => g.pgid === pgid)) out.push({ pgid });
      } catch {
        // not started yet, or the agent cleaned up after it ended
      }
    }
    return out;
  }

  /** Pid of the live agent, as the agent itself recorded it. */
  async agentPid(): Promise<number | undefined> {
    try {
      const pid = Number((await fs.readFile(path.join(this.stateDir, 'agent.pid'), 'utf8')).trim());
      return Number.isInteger(pid) && pid > 0 ? pid : undefined;
    } catch {
      return undefined;
    }
  }

  /** First writer wins: the record of how the instance ended never changes afterwards. */
  markTerminated(record: TerminatedRecord): Promise<boolean> {
    return createJsonExclusive(this.terminatedFile, record);
  }

  markShuttingDown(record: ShutdownRecord): Promise<boolean> {
    return createJsonExclusive(this.shutdownFile, record);
  }

  /**
   * A terminated sandbox keeps its records (tags, instance, host, notice, terminated, logs of the
   * host and agent) so its history can still be observed; the bulky parts go.
   */
  async removeWorkData(): Promise<void> {
    await fs.rm(this.workDir, { recursive: true, force: true });
    await fs.rm(this.fsRoot, { recursive: true, force: true });
    let names: string[] = [];
    try {
      names = await fs.readdir(this.stateDir);
    } catch {
      return;
    }
    const keep = new Set(['agent.log', 'result.json']);
    for (const name of names) if (!keep.has(name)) await fs.rm(path.join(this.stateDir, name), { recursive: true, force: true });
  }
}

/** The folder of all sandboxes. Entries starting with "." are in-flight creations and locks. */
export class SandboxRoot {
  constructor(readonly root: string) {}

  get instancesDir(): string {
    return path.join(this.root, 'instances');
  }

  sandbox(id: string): Sandbox {
    return new Sandbox(path.join(this.instancesDir, id), id);
  }

  /** One readdir: every sandbox there is. */
  async list(): Promise<Sandbox[]> {
    let names: string[];
    try {
      names = await fs.readdir(this.instancesDir);
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return [];
      throw err;
    }
    return names.filter((n) => !n.startsWith('.') && isInstanceId(n)).map((n) => this.sandbox(n));
  }

  /** Creates a sandbox with its tags and instance record in one rename: it never exists half-made. */
  async create(id: string, tags: Tags, instance: InstanceRef): Promise<Sandbox> {
    await fs.mkdir(this.instancesDir, { recursive: true });
    const staging = path.join(this.instancesDir, `.creating-${id}`);
    await fs.rm(staging, { recursive: true, force: true });
    await fs.mkdir(path.join(staging, 'imds'), { recursive: true });
    await writeJsonAtomic(path.join(staging, 'tags.json'), tags);
    await writeJsonAtomic(path.join(staging, 'instance.json'), instance);
    const sandbox = this.sandbox(id);
    await fs.rename(staging, sandbox.dir);
    return sandbox;
  }
}
