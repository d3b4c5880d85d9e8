// The aws provider: EC2 for instances (spot with fallback), SSM to start runctl's agent on them,
// S3 for code bundles, agent status, logs and checkpoints. It implements the Provider port; every
// operation is idempotent and every AWS failure reaches the reconciler classified.
import { TerminateInstancesCommand, type Instance } from '@aws-sdk/client-ec2';
import { checkpointsPrefix, controlKey, gateKey, logsPrefix, manifestKey, progressKey, startGateDocument, statusKey } from '../../agent/layout.js';
import { parseProgressDocument, ProgressDocumentError } from '../../agent/progress-document.js';
import type { RunSpec } from '../../spec/types.js';
import {
  ProviderError,
  RetryableError,
  TerminalError,
  type AgentStatus,
  type AttemptKey,
  type BootAgent,
  type BundlePruneResult,
  type CheckpointManifest,
  type DoctorCheck,
  type DoctorTarget,
  type DeployReport,
  type DeployRequest,
  type InstanceObservation,
  type InstancePrice,
  type InstanceRef,
  type LaunchRequest,
  type LaunchResult,
  type LogChunk,
  type LogReadOptions,
  type PreflightProblem,
  type ProgressPoint,
  type Provider,
  type RungQuote,
  type StopReason,
} from '../types.js';
import { pruneBundles, pruneSetupCaches } from './bundles.js';
import type { PricingClient } from '@aws-sdk/client-pricing';
import { chainRegion, createClients, createPricingClient, customEndpoint, type AwsClients, type AwsCredentials, type ClientOptions } from './clients.js';
import { deployAgent, prepareAgent, stopRequest, type DeployDeps, type DeployOutcome } from './deploy.js';
import type { DoctorClients } from './doctor/clients.js';
import { launchAttempt, marketLadder, USER_DATA_MAX_BYTES } from './ec2-launch.js';
import { awsCall, errorCode, requestIdOf } from './errors.js';
import { ImageResolver } from './image.js';
import { instanceDegradations, type Degradation } from './instance-status.js';
import { checkImage } from './image-check.js';
import { describeOwnedInstances, groupByRun, toObservation } from './observe.js';
import { checkInstanceTypeOfferings, gaveUp } from './offerings.js';
import { PriceList, priceListEndpointRegion, type ListedPrice } from './price-list.js';
import { SpotPrices } from './pricing.js';
import { currentSpotPrices, spotPriceHistory } from './spot-history.js';
import type { RetryOptions } from './retry.js';
import { onlineInstances } from './ssm.js';
import { parseStorageUrl, S3Storage } from './storage.js';

export interface AwsProviderOptions {
  /** Project default region (runctl.yaml); a spec's resources.region wins; else the standard AWS chain. */
  region?: string;
  /** More regions to observe, for runs whose specs name other regions. */
  regions?: string[];
  /** Custom endpoint for EC2, SSM and S3 (moto, LocalStack); `AWS_ENDPOINT_URL` works too. Implies S3 path-style. */
  endpointUrl?: string;
  /** Named profile from ~/.aws/config; otherwise the standard chain (env, SSO, profiles, instance role). */
  profile?: string;
  credentials?: AwsCredentials;
  /** Value of the runctl:controller tag: which controller deployment owns the instances. */
  controller?: string;
  /** Storage for specs without checkpoints.storage (runctl.yaml defaults.storage). */
  defaultStorage?: string;
  pollIntervalMs?: number;
  /**
   * Look at a spot run this often while it trains or stops after a notice (default 3000 ms): one
   * conditional S3 GET of the agent's status per look, about 29,000 a day per run ($0.012 at S3's
   * $0.0004 per 1,000 GETs), for a notice seen seconds sooner (issue 12). Instances are still
   * described at most every pollIntervalMs / 2.
   */
  noticePollIntervalMs?: number;
  retry?: Partial<RetryOptions>;
  /** Page size of DescribeInstances during observation (default 1000, the API maximum). */
  describePageSize?: number;
  /** S3 endpoint the agent on the instance uses; defaults to the custom endpoint, if any. */
  agentS3EndpointUrl?: string;
  /** SSM endpoint the agent uses to resolve `ssm:` secrets; defaults to the custom endpoint, if any. */
  agentSsmEndpointUrl?: string;
  /** Agent heartbeat and IMDS/control poll periods (defaults from renderAgentConfig: 10 s and 2 s). */
  agentTiming?: { heartbeatSeconds?: number; noticePollSeconds?: number };
  /** How often scheduled events and status checks are read (DescribeInstanceStatus), default 60 s. */
  statusCheckIntervalMs?: number;
  /** Wall-clock limit for SSM to accept and finish the agent's install command. */
  ssmDeadlineMs?: number;
  ssmPollMs?: number;
  /** Client factory, for tests (e.g. to add counting middleware). */
  clients?: (region: string) => AwsClients;
  /**
   * File keeping on-demand prices read from the Price List API across processes (a day's TTL);
   * without it they are kept in memory only. The CLI uses `$XDG_CACHE_HOME/runctl/price-list.json`.
   */
  priceCacheFile?: string;
}

export const DEFAULT_CONTROLLER = 'default';

/** How long after its launch an instance EC2 calls unknown is taken as not yet visible rather than gone. */
export const TERMINATE_VISIBILITY_MS = 5 * 60_000;

export class AwsProvider implements Provider {
  readonly name = 'aws';
  readonly pollIntervalMs: number;
  readonly noticePollIntervalMs: number;
  readonly controller: string;
  private readonly clientOpts: ClientOptions;
  private readonly clientsByRegion = new Map<string, AwsClients>();
  private readonly regions = new Set<string>();
  private readonly instanceRegion = new Map<string, string>();
  private readonly online = new Set<string>();
  /** The last DescribeInstanceStatus answer per region. */
  private readonly statusChecks = new Map<string, { at: number; byId: Map<string, Degradation> }>();
  /** Launch times of instances this process launched or saw (ISO), for terminate's visibility window. */
  private readonly launchedAt = new Map<string, string>();
  private readonly statusCache = new Map<string, { etag?: string; status: AgentStatus }>();
  private readonly images = new ImageResolver();
  private readonly prices = new SpotPrices();
  /** The newest spec seen per run, for port calls that carry none (deliverSpotNotice). */
  private readonly specByRun = new Map<string, RunSpec>();
  private readonly knownObjects = new Set<string>();
  private defaultRegion?: Promise<string>;
  private readonly doctorClients = new Map<string, DoctorClients>();
  private readonly pricingClients = new Map<string, PricingClient>();
  private readonly priceList: PriceList;

  constructor(private readonly opts: AwsProviderOptions = {}) {
    this.pollIntervalMs = opts.pollIntervalMs ?? 15_000;
    this.noticePollIntervalMs = opts.noticePollIntervalMs ?? 3_000;
    this.controller = opts.controller ?? DEFAULT_CONTROLLER;
    this.clientOpts = {
      region: opts.region,
      endpointUrl: opts.endpointUrl,
      profile: opts.profile,
      credentials: opts.credentials,
      retry: opts.retry,
    };
    for (const r of opts.regions ?? []) this.regions.add(r);
    if (opts.region) this.regions.add(opts.region);
    this.priceList = new PriceList((endpoint) => this.pricingClient(endpoint), opts.priceCacheFile ? { cacheFile: opts.priceCacheFile } : {});
  }

  private pricingClient(endpointRegion: string): PricingClient {
    let client = this.pricingClients.get(endpointRegion);
    if (!client) {
      client = createPricingClient(endpointRegion, this.clientOpts);
      this.pricingClients.set(endpointRegion, client);
    }
    return client;
  }

  /**
   * Prices of one instance over its life so far: spot, the DescribeSpotPriceHistory steps for its
   * type, zone and Linux product description between `window.from` and `window.to`; on-demand, the
   * price list's price. The on-demand price is read for spot instances too, to say what spot saved.
   * A price AWS will not give (permission denied, no such product) is `unknown` with AWS's reason
   * and what to do; a transient failure throws RetryableError.
   */
  async priceInstance(instance: InstanceRef, window: { from: string; to: string }, spec: RunSpec): Promise<InstancePrice> {
    const region = this.instanceRegion.get(instance.id) ?? (await this.regionFor(spec));
    const fetchedAt = new Date().toISOString();
    if (!instance.type) return { unknown: `the instance type of ${instance.id} is not recorded`, source: 'aws', fetchedAt };
    const onDemand = await this.listedPrice(region, instance.type);
    const sources = [`price list ${priceListEndpointRegion(region)}`];
    const out: InstancePrice = { source: '', fetchedAt };
    if ('usdPerHour' in onDemand) out.onDemandUSDPerHour = onDemand.usdPerHour;
    else out.onDemandUnknown = onDemand.unknown;
    if (instance.market === 'spot') {
      if (!instance.zone) {
        out.unknown = `the Availability Zone of spot instance ${instance.id} is not recorded, and spot prices are per zone`;
      } else {
        try {
          const { steps, product } = await spotPriceHistory(this.clientsFor(region), instance.type, instance.zone, new Date(window.from), new Date(window.to));
          sources.unshift(`spot price history ${instance.zone}${product ? ` ${product}` : ''}`);
          if (steps.length > 0) out.steps = steps;
          else out.unknown = `EC2 lists no Linux spot price for ${instance.type} in ${instance.zone} between ${window.from} and ${window.to}`;
        } catch (err) {
          if (err instanceof RetryableError) throw err;
          out.unknown = (err as Error).message;
        }
      }
    } else if ('usdPerHour' in onDemand) {
      out.steps = [{ from: instance.launchedAt, usdPerHour: onDemand.usdPerHour }];
    } else {
      out.unknown = onDemand.unknown;
    }
    out.source = sources.join('; ');
    return out;
  }

  /** The on-demand price, or why there is none; a permission or other terminal failure becomes the reason. */
  private async listedPrice(region: string, instanceType: string): Promise<ListedPrice> {
    try {
      return await this.priceList.onDemand(region, instanceType);
    } catch (err) {
      if (err instanceof RetryableError) throw err;
      return { unknown: (err as Error).message };
    }
  }

  /**
   * `plan`: the hourly price of every rung of the spec's ladder: spot at its current price in each
   * zone the spec allows (all zones EC2 lists when it names none), on-demand from the price list.
   */
  async quoteSpec(spec: RunSpec): Promise<RungQuote[]> {
    // A quote is read once, for plan: a transient failure has already been retried by then.
    return gaveUp(() => this.quoteRungs(spec));
  }

  private async quoteRungs(spec: RunSpec): Promise<RungQuote[]> {
    const region = await this.regionFor(spec);
    const out: RungQuote[] = [];
    for (const rung of marketLadder(spec.resources)) {
      if (rung.market === 'on-demand') {
        if (out.some((q) => q.market === 'on-demand' && q.instanceType === rung.instanceType)) continue;
        const p = await this.listedPrice(region, rung.instanceType);
        out.push({ market: 'on-demand', instanceType: rung.instanceType, ...('usdPerHour' in p ? { usdPerHour: p.usdPerHour } : { unknown: p.unknown }), source: `price list ${priceListEndpointRegion(region)}` });
        continue;
      }
      if (out.some((q) => q.market === 'spot' && q.instanceType === rung.instanceType && (rung.zone === undefined || q.zone === rung.zone))) continue;
      let byZone: Map<string, number>;
      try {
        byZone = await currentSpotPrices(this.clientsFor(region), rung.instanceType);
      } catch (err) {
        if (err instanceof RetryableError) throw err;
        out.push({ market: 'spot', instanceType: rung.instanceType, ...(rung.zone ? { zone: rung.zone } : {}), unknown: (err as Error).message, source: 'spot price history' });
        continue;
      }
      const zones = rung.zone ? [rung.zone] : [...byZone.keys()].sort();
      if (zones.length === 0) out.push({ market: 'spot', instanceType: rung.instanceType, unknown: `EC2 lists no Linux spot price for ${rung.instanceType} in ${region}`, source: 'spot price history' });
      for (const zone of zones) {
        const usd = byZone.get(zone);
        out.push({ market: 'spot', instanceType: rung.instanceType, zone, ...(usd !== undefined ? { usdPerHour: usd } : { unknown: `EC2 lists no Linux spot price for ${rung.instanceType} in ${zone}` }), source: 'spot price history' });
      }
    }
    return out;
  }

  private remember(run: string, spec: RunSpec): void {
    this.specByRun.set(run, spec);
    if (spec.resources.region) this.regions.add(spec.resources.region);
  }

  /** Observation covers every region a tracked run's spec names (after a restart too). */
  track(run: string, spec: RunSpec): void {
    this.remember(run, spec);
  }

  /** spec.resources.region, then the project default, then the standard chain. */
  async regionFor(spec?: RunSpec): Promise<string> {
    const explicit = spec?.resources.region ?? this.opts.region;
    if (explicit) return explicit;
    this.defaultRegion ??= chainRegion(this.clientOpts);
    return this.defaultRegion;
  }

  clientsFor(region: string): AwsClients {
    let clients = this.clientsByRegion.get(region);
    if (!clients) {
      clients = this.opts.clients ? this.opts.clients(region) : createClients(region, this.clientOpts);
      this.clientsByRegion.set(region, clients);
    }
    this.regions.add(region);
    return clients;
  }

  private async storageFor(spec: RunSpec): Promise<S3Storage> {
    const region = await this.regionFor(spec);
    return new S3Storage(this.clientsFor(region).s3, parseStorageUrl(spec.checkpoints.storage ?? this.opts.defaultStorage), region);
  }

  private get agentS3Endpoint(): string | undefined {
    return this.opts.agentS3EndpointUrl ?? customEndpoint(this.clientOpts, 'S3');
  }

  async observe(runs: string[]): Promise<Map<string, InstanceObservation[]>> {
    // Without any tracked run or configured region, the standard chain names the one region to look at.
    if (this.regions.size === 0) this.regions.add(await this.regionFor());
    const merged = new Map<string, InstanceObservation[]>(runs.map((r) => [r, []]));
    for (const region of this.regions) {
      const clients = this.clientsFor(region);
      const instances = await describeOwnedInstances(clients, this.controller, this.opts.describePageSize);
      for (const i of instances) {
        if (!i.InstanceId) continue;
        this.instanceRegion.set(i.InstanceId, region);
        if (i.LaunchTime) this.launchedAt.set(i.InstanceId, i.LaunchTime.toISOString());
      }
      // SSM is asked only about running instances not yet seen Online: none in steady state.
      const unknown = instances
        .filter((i) => i.State?.Name === 'running' && i.InstanceId && !this.online.has(i.InstanceId))
        .map((i) => i.InstanceId as string);
      if (unknown.length > 0) {
        try {
          for (const id of await onlineInstances(clients, unknown)) this.online.add(id);
        } catch (err) {
          // Readiness can wait for the next pass (the instances are still reported, not ready);
          // a missing permission cannot.
          if (!(err instanceof RetryableError)) throw err;
        }
      }
      const degraded = await this.degradations(clients, instances);
      for (const [run, list] of groupByRun(instances, runs, (id) => this.online.has(id))) {
        for (const o of list) {
          const d = o.state === 'running' ? degraded.get(o.instance.id) : undefined;
          if (d) o.degraded = d;
        }
        merged.get(run)?.push(...list);
      }
    }
    return merged;
  }

  /**
   * Scheduled events and failed status checks of the running instances, asked at most once per
   * statusCheckIntervalMs per region (one batched DescribeInstanceStatus), remembered in between.
   * A failure to ask only delays what it would tell: it never fails the observation pass.
   */
  private async degradations(clients: AwsClients, instances: Instance[]): Promise<Map<string, Degradation>> {
    const region = clients.region;
    const cached = this.statusChecks.get(region);
    const every = this.opts.statusCheckIntervalMs ?? 60_000;
    if (cached && Date.now() - cached.at < every) return cached.byId;
    const running = instances.filter((i) => i.State?.Name === 'running' && i.InstanceId).map((i) => i.InstanceId as string);
    try {
      const byId = running.length ? await instanceDegradations(clients, running) : new Map<string, Degradation>();
      this.statusChecks.set(region, { at: Date.now(), byId });
      return byId;
    } catch (err) {
      if (!(err instanceof RetryableError) && !(err instanceof TerminalError)) throw err;
      return cached?.byId ?? new Map();
    }
  }

  /** Every instance tagged with this controller, of any run, in every region it observes. */
  async listOwned(opts?: { oneShot?: boolean }): Promise<InstanceObservation[]> {
    return opts?.oneShot ? gaveUp(() => this.listOwnedOnce()) : this.listOwnedOnce();
  }

  private async listOwnedOnce(): Promise<InstanceObservation[]> {
    if (this.regions.size === 0) this.regions.add(await this.regionFor());
    const out: InstanceObservation[] = [];
    for (const region of this.regions) {
      const clients = this.clientsFor(region);
      const instances = await describeOwnedInstances(clients, this.controller, this.opts.describePageSize);
      for (const i of instances) {
        if (i.InstanceId) this.instanceRegion.set(i.InstanceId, region);
        const o = toObservation(i, false, new Date());
        if (o) out.push(o);
      }
    }
    return out;
  }

  async launch(req: LaunchRequest): Promise<LaunchResult> {
    this.remember(req.run, req.spec);
    const region = await this.regionFor(req.spec);
    const clients = this.clientsFor(region);
    const boot = req.bootAgent;
    const userData = boot ? () => this.bootScript(req, boot, clients) : undefined;
    const result = await launchAttempt({ clients, images: this.images, prices: this.prices, ...(userData ? { userData } : {}) }, req);
    this.instanceRegion.set(result.instance.id, region);
    this.launchedAt.set(result.instance.id, result.instance.launchedAt);
    return result;
  }

  /**
   * The agent's install script as user data (LaunchRequest.bootAgent), or why the instance is
   * launched without it. Never fails the launch: the agent is deployed over SSM once the instance
   * is ready in any case, and that deploy reports what went wrong (a spec.code error, access).
   */
  private async bootScript(req: LaunchRequest, boot: BootAgent, clients: AwsClients): Promise<{ script: string } | { reason: string }> {
    try {
      const key = { run: req.run, ...(req.uid !== undefined ? { uid: req.uid } : {}), generation: req.generation, attempt: req.attempt };
      const { script } = await prepareAgent(await this.agentDeps(req.spec, clients), { ...key, spec: req.spec, ...boot });
      const bytes = Buffer.byteLength(script, 'utf8');
      if (bytes > USER_DATA_MAX_BYTES) return { reason: `the agent's start script is ${bytes} bytes, over EC2's ${USER_DATA_MAX_BYTES} bytes of user data` };
      return { script };
    } catch (err) {
      if (err instanceof ProviderError) return { reason: err.message };
      throw err;
    }
  }

  async deployAgent(req: DeployRequest): Promise<DeployReport> {
    const outcome = await this.deploy(req);
    return { codeBundle: outcome.bundleSha256 };
  }

  /** deployAgent, returning what it did (bundle bytes uploaded, SSM command id) for tests and the event log. */
  async deploy(req: DeployRequest): Promise<DeployOutcome> {
    this.remember(req.run, req.spec);
    const region = await this.regionFor(req.spec);
    this.instanceRegion.set(req.instance.id, region);
    const deps = await this.agentDeps(req.spec, this.clientsFor(region));
    return deployAgent({ ...deps, deadlineMs: this.opts.ssmDeadlineMs ?? 180_000, pollMs: this.opts.ssmPollMs ?? 2000 }, req);
  }

  /** What shipping an agent needs, for user data and for the SSM deploy alike: storage, endpoints, known objects, timing. */
  private async agentDeps(spec: RunSpec, clients: AwsClients): Promise<Omit<DeployDeps, 'deadlineMs' | 'pollMs'>> {
    return {
      clients,
      storage: await this.storageFor(spec),
      s3EndpointUrl: this.agentS3Endpoint,
      ssmEndpointUrl: this.opts.agentSsmEndpointUrl ?? customEndpoint(this.clientOpts, 'SSM'),
      knownObjects: this.knownObjects,
      timing: this.opts.agentTiming,
    };
  }

  /** One conditional GET per call: 304 returns the cached status without a body. */
  async readAgentStatus(key: AttemptKey, spec: RunSpec): Promise<AgentStatus | undefined> {
    this.remember(key.run, spec);
    const storage = await this.storageFor(spec);
    const objectKey = storage.url(statusKey(key));
    const cached = this.statusCache.get(objectKey);
    const read = await storage.getConditional(statusKey(key), cached?.etag);
    if (read.kind === 'unchanged') return cached?.status;
    if (read.kind === 'missing') {
      this.statusCache.delete(objectKey);
      return undefined;
    }
    let status: AgentStatus;
    try {
      status = JSON.parse(read.body) as AgentStatus;
    } catch {
      throw new RetryableError(`agent status ${objectKey} is not valid JSON; it is read again on the next pass`, { code: 'BadStatus' });
    }
    // A stale object (lower seq than one already seen) never moves the run backwards.
    if (cached && cached.status.seq > status.seq) return cached.status;
    this.statusCache.set(objectKey, { etag: read.etag, status });
    return status;
  }

  async requestStop(key: AttemptKey, spec: RunSpec, reason: StopReason): Promise<void> {
    this.remember(key.run, spec);
    const storage = await this.storageFor(spec);
    await storage.putText(controlKey(key), JSON.stringify(stopRequest(key, reason)));
  }

  async openStartGate(key: AttemptKey, spec: RunSpec): Promise<void> {
    this.remember(key.run, spec);
    const storage = await this.storageFor(spec);
    await storage.putText(gateKey(key), JSON.stringify(startGateDocument(key, new Date())));
  }

  /**
   * A rehearsal of a spot interruption. EC2 offers no API to put a notice on an instance's IMDS (only
   * AWS FIS experiments can), so the agent is asked through its control object to checkpoint and
   * stop exactly as it does on a notice; the reconciler then resumes the run on a new instance.
   */
  async deliverSpotNotice(key: AttemptKey, _instanceId: string): Promise<void> {
    const spec = this.specByRun.get(key.run);
    if (!spec) {
      throw new RetryableError(`no spec seen yet for ${key.run}; the rehearsal is retried on the next pass`, { code: 'UnknownRun' });
    }
    const storage = await this.storageFor(spec);
    await storage.putText(controlKey(key), JSON.stringify(stopRequest(key, 'spot-rehearsal')));
  }

  /**
   * TerminateInstances. `InvalidInstanceID.NotFound` means "already gone" only for an instance
   * launched more than TERMINATE_VISIBILITY_MS ago: right after RunInstances, EC2 may not know the
   * id yet (EC2 API reference, "Eventual consistency"), and a terminated instance stays visible
   * (and terminable, as a no-op) for about an hour. Within the window it is a RetryableError, so
   * the reconciler's pending terminate is replayed instead of leaving the instance running.
   */
  async terminate(instanceId: string, opts: { launchedAt?: string } = {}): Promise<void> {
    const region = this.instanceRegion.get(instanceId) ?? (await this.regionFor());
    const clients = this.clientsFor(region);
    try {
      await clients.ec2.send(new TerminateInstancesCommand({ InstanceIds: [instanceId] }));
    } catch (err) {
      if (errorCode(err) === 'InvalidInstanceID.NotFound') {
        const launchedAt = opts.launchedAt ?? this.launchedAt.get(instanceId);
        const age = launchedAt ? Date.now() - Date.parse(launchedAt) : Number.POSITIVE_INFINITY;
        if (!(age < TERMINATE_VISIBILITY_MS)) return;
        throw new RetryableError(
          `EC2 does not know ${instanceId} yet (InvalidInstanceID.NotFound ${Math.round(age / 1000)}s after its launch: EC2 is ` +
            'eventually consistent); terminating it is retried',
          { code: 'InvalidInstanceID.NotFound', requestId: requestIdOf(err), cause: err },
        );
      }
      await awsCall({ service: 'ec2', operation: 'TerminateInstances', region }, () => Promise.reject(err));
    }
    this.online.delete(instanceId);
  }

  async latestCheckpoint(run: string, generation: number, spec: RunSpec, uid?: string): Promise<CheckpointManifest | undefined> {
    const storage = await this.storageFor(spec);
    const ids = (await storage.listDirectories(checkpointsPrefix(run, generation, uid))).sort().reverse();
    // Newest first; a directory without its manifest is a checkpoint still uploading (or abandoned).
    for (const id of ids) {
      const text = await storage.getText(manifestKey(run, generation, id, uid));
      if (text === undefined) continue;
      try {
        return JSON.parse(text) as CheckpointManifest;
      } catch {
        continue;
      }
    }
    return undefined;
  }

  /** One GET of the attempt's progress history (src/agent/progress-document.ts). */
  async readProgressHistory(key: AttemptKey, spec: RunSpec): Promise<ProgressPoint[] | undefined> {
    const storage = await this.storageFor(spec);
    const text = await storage.getText(progressKey(key));
    if (text === undefined) return undefined;
    try {
      return parseProgressDocument(text, storage.url(progressKey(key)));
    } catch (err) {
      if (err instanceof ProgressDocumentError) throw new RetryableError(err.message, { code: 'BadProgressHistory' });
      throw err;
    }
  }

  async readLogs(key: AttemptKey, spec: RunSpec, cursor?: string, opts: LogReadOptions = {}): Promise<LogChunk> {
    const storage = await this.storageFor(spec);
    const segments = await storage.list(logsPrefix(key), { startAfter: cursor, limit: 50 });
    let text = '';
    let last = cursor ?? '';
    for (const segment of segments) {
      if (opts.since && segment.LastModified && segment.LastModified < opts.since) {
        last = segment.Key;
        continue;
      }
      const body = await storage.getText(segment.Key);
      if (body === undefined) break;
      text += body;
      last = segment.Key;
    }
    return { attempt: key.attempt, cursor: last, text };
  }

  /**
   * Plan-time checks: spec.resources.instanceTypes against the region's (or the zones') offerings,
   * then the image (exists, architecture per type, root snapshot within rootVolumeGiB).
   */
  async preflight(spec: RunSpec): Promise<PreflightProblem[]> {
    const clients = this.clientsFor(await this.regionFor(spec));
    const offered = await checkInstanceTypeOfferings(clients, spec.resources);
    if (!spec.resources.image) return offered;
    const { findings } = await gaveUp(() => checkImage(clients, spec.resources, this.images));
    return [...offered, ...findings.map(({ path, severity, message, orAt }) => ({ path, severity, message, ...(orAt ? { orAt } : {}) }))];
  }

  /**
   * `runctl doctor`: credentials, storage (with one probe object, deleted), instance profile and its
   * role (IAM policy simulator), image, subnets, spot service-linked role and vCPU quotas for these
   * runs. The IAM, STS and Service Quotas clients are loaded only here.
   */
  async doctor(targets: DoctorTarget[]): Promise<DoctorCheck[]> {
    const [{ runDoctor }, { createDoctorClients }] = await Promise.all([import('./doctor/index.js'), import('./doctor/clients.js')]);
    return runDoctor(
      {
        clientsFor: (region) => this.clientsFor(region),
        doctorClientsFor: (region) => {
          let c = this.doctorClients.get(region);
          if (!c) {
            c = createDoctorClients(region, this.clientOpts);
            this.doctorClients.set(region, c);
          }
          return c;
        },
        regionFor: (spec) => this.regionFor(spec),
        images: this.images,
        defaultStorage: this.opts.defaultStorage,
        stsEndpoint: customEndpoint(this.clientOpts, 'STS'),
      },
      targets,
    );
  }

  /** Delete code bundles in the spec's storage that no run references any more (runctl's own bundles/ prefix only). */
  async pruneBundles(spec: RunSpec, referenced: ReadonlySet<string>, opts: { minAgeMs: number }): Promise<BundlePruneResult> {
    return pruneBundles(await this.storageFor(spec), referenced, opts.minAgeMs);
  }

  /** Delete setup cache entries no run holds and archives no kept entry names (runctl's own setup-cache/ keys only). */
  async pruneSetupCaches(spec: RunSpec, referenced: ReadonlySet<string>, opts: { minAgeMs: number }): Promise<BundlePruneResult> {
    return pruneSetupCaches(await this.storageFor(spec), referenced, opts.minAgeMs);
  }

  async close(): Promise<void> {
    for (const clients of this.clientsByRegion.values()) {
      clients.ec2.destroy();
      clients.ssm.destroy();
      clients.s3.destroy();
    }
    this.clientsByRegion.clear();
    for (const c of this.doctorClients.values()) {
      c.iam.destroy();
      c.sts.destroy();
      c.quotas.destroy();
    }
    this.doctorClients.clear();
    for (const c of this.pricingClients.values()) c.destroy();
    this.pricingClients.clear();
  }
}

export function createAwsProvider(opts: AwsProviderOptions = {}): AwsProvider {
  return new AwsProvider(opts);
}
