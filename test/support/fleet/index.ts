// The fleet simulator: a loopback proxy in front of moto that makes moto's instances come alive.
// It forwards every request to moto and supplies what moto lacks:
// - SSM DescribeInstanceInformation: Online for instances it has booted;
// - SSM SendCommand (AWS-RunShellScript): runs the script in the instance's sandbox, with the real
//   agent and the real AWS CLI against moto's S3; GetCommandInvocation reports the real outcome;
// - user data that is a `#!` script runs there too once the instance is running, as cloud-init does;
// - a per-instance IMDSv2 endpoint, spot notices on it, then termination in moto with the
//   `Server.SpotInstanceTermination` reason that its DescribeInstances answers then carry;
// - faults on request: throttling, insufficient capacity, no spot capacity, any error.
// Test support, not a product feature.
//
//   const fleet = await startFleet({ motoUrl });
//   createAwsProvider({ endpointUrl: fleet.endpoint, ... });
//   fleet.injectFault({ kind: 'insufficient-capacity', instanceTypes: ['g5.xlarge'] });
//   await fleet.deliverSpotNotice(instanceId, { terminateAfterMs: 20_000 });
import fs from 'node:fs';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { motoQuery } from '../moto.js';
import {
  errorResponse,
  instanceIdsInXml,
  jsonResponse,
  listParam,
  parseRequest,
  patchInstanceState,
  patchStateReason,
  withoutInstances,
  type AwsRequest,
  type WireError,
} from './aws-wire.js';
import { AccountModel } from './account.js';
import { Faults, type FaultRule } from './faults.js';
import { PriceModel } from './pricing.js';
import { Imds, type ImdsInstance } from './imds.js';
import { instanceProcesses, killInstanceProcesses, runInSandbox, type Invocation } from './sandbox.js';
import { INSTANT_TIMING, s3TransferMs, type FleetTiming } from './timing.js';

export type { FaultRule } from './faults.js';
export { EC2_TIMING, INSTANT_TIMING, scaledTiming, type FleetTiming } from './timing.js';

export interface FleetOptions {
  motoUrl: string;
  region?: string;
  /** Where sandboxes live; a fresh temporary directory by default (removed on close). */
  workDir?: string;
  /** Delay between RunInstances and the instance reporting Online in SSM (timing.ssmRegistrationMs when timing is not given). */
  bootDelayMs?: number;
  /**
   * How long EC2 boot, SSM registration, S3 transfers and the notice's lead take (timing.ts);
   * unset figures keep the fleet's old behaviour (INSTANT_TIMING). `scaledTiming(1 / 20)` is EC2 at
   * 1/20 of real time.
   */
  timing?: Partial<FleetTiming>;
  /** Extra environment for commands run on instances. */
  env?: Record<string, string>;
}

export interface FleetInstance extends ImdsInstance {
  launchedAt: Date;
  /** When DescribeInstances starts saying `running` (pending before): timing.bootMs after launch. */
  runningAt: Date;
  onlineAt: Date;
  sandboxDir: string;
  state: 'running' | 'terminated';
  terminatedAt?: Date;
  /** Set when the simulator terminated it for a spot interruption. */
  spotTermination?: { at: Date };
  /** What DescribeInstanceStatus reports beyond "ok": a scheduled event, failed status checks. */
  health?: { event?: { code: string; description: string; notBefore: Date }; impaired?: 'instance' | 'system' };
  /** The state reason EC2 would report, where moto cannot (a stop by AWS, a launch-time failure). */
  stateReason?: { code: string; message: string; transition: string };
  invocations: Invocation[];
}

export interface CallRecord {
  service: string;
  action: string;
  status: number;
  injected: boolean;
  fromSdk: boolean;
  at: number;
  /** Time to answer, once answered. */
  ms?: number;
}

export interface Fleet {
  /** Give this to the provider as its endpoint URL. */
  readonly endpoint: string;
  readonly motoUrl: string;
  readonly workDir: string;
  readonly instances: Map<string, FleetInstance>;
  /** Every request the proxy saw, in order. */
  readonly calls: CallRecord[];
  readonly imds: Imds;
  readonly faults: Faults;
  /** Service Quotas, the IAM policy simulator and image root sizes, which moto lacks (account.ts). */
  readonly account: AccountModel;
  /** The timing model in force (timing.ts). */
  readonly timing: Readonly<FleetTiming>;
  /**
   * Changes figures of the timing model from now on: instances launched and notices delivered
   * afterwards follow them (e.g. a test that models only the race after a notice boots its first
   * instance at once, then sets the scaled EC2 figures before delivering the notice).
   */
  setTiming(timing: Partial<FleetTiming>): void;
  /** On-demand prices (GetProducts) and spot price history, from recorded fixtures (pricing.ts). */
  readonly prices: PriceModel;
  injectFault(rule: FaultRule): () => void;
  clearFaults(): void;
  imdsUrl(instanceId: string): string;
  /** Serve a spot interruption notice on the instance's IMDS; terminate it once its processes are gone or after `terminateAfterMs` (default timing.noticeLeadMs). */
  deliverSpotNotice(instanceId: string, opts?: { terminateAfterMs?: number }): Promise<void>;
  /** Resolves when the instance is terminated (by a spot notice or anyone). */
  whenTerminated(instanceId: string): Promise<void>;
  /** Terminate as someone outside runctl would (console, another script): no spot reason. */
  terminateOutOfBand(instanceId: string): Promise<void>;
  /**
   * EC2's eventual consistency after RunInstances: until undone, an instance launched less than
   * `ms` ago is missing from DescribeInstances, as EC2 may for a few seconds. (Other calls naming
   * it can be made to answer `InvalidInstanceID.NotFound` with `ec2Errors.terminateNotFound`.)
   * Returns the undo.
   */
  hideNewInstances(ms: number): () => void;
  /**
   * Stop the instance in moto as EC2 would: `spot` as a spot interruption with the stop (or
   * hibernate) behaviour (state reason Server.SpotInstanceShutdown), otherwise as a user stop.
   */
  stopInstance(instanceId: string, opts?: { spot?: boolean }): Promise<void>;
  /**
   * What EC2's DescribeInstanceStatus will say about the instance: a scheduled event (code e.g.
   * instance-retirement, system-reboot, instance-stop) or failed instance or system status checks.
   */
  setHealth(instanceId: string, health: NonNullable<FleetInstance['health']>): void;
  /** End the instance the way EC2 ends one that fails at launch, with that state reason (e.g. Client.InternalError). */
  failAtLaunch(instanceId: string, code: string, message: string): Promise<void>;
  /** Instances moto holds in a live state (pending, running, stopping, stopped), optionally for one run tag. */
  liveInMoto(run?: string): Promise<string[]>;
  close(): Promise<void>;
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

function sendWire(res: ServerResponse, wire: WireError): void {
  res.writeHead(wire.status, { ...wire.headers, 'content-length': Buffer.byteLength(wire.body) });
  res.end(wire.body);
}

function listen(server: http.Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      if (typeof address === 'object' && address) resolve(address.port);
      else reject(new Error('no address'));
    });
  });
}

export async function startFleet(opts: FleetOptions): Promise<Fleet> {
  const region = opts.region ?? 'us-east-1';
  const timing: FleetTiming = {
    ...INSTANT_TIMING,
    ...(opts.bootDelayMs !== undefined ? { ssmRegistrationMs: opts.bootDelayMs } : {}),
    ...opts.timing,
  };
  const ownsWorkDir = !opts.workDir;
  const workDir = opts.workDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'runctl-fleet-'));
  const moto = new URL(opts.motoUrl);
  const instances = new Map<string, FleetInstance>();
  const invocations = new Map<string, Invocation>();
  const calls: CallRecord[] = [];
  const faults = new Faults();
  const account = new AccountModel(opts.motoUrl);
  const prices = new PriceModel();
  const imds = new Imds((id) => instances.get(id));
  const terminationWaiters = new Map<string, (() => void)[]>();
  // RunInstances idempotency as EC2 documents it (moto ignores ClientToken): a repeated token with
  // the same parameters returns the original reservation; with other parameters, a mismatch error.
  const clientTokens = new Map<string, { params: string; status: number; headers: http.IncomingHttpHeaders; body: Buffer }>();
  let hideWindowMs = 0;
  const hiddenNow = (): Set<string> =>
    new Set([...instances.values()].filter((i) => hideWindowMs > 0 && Date.now() - i.launchedAt.getTime() < hideWindowMs).map((i) => i.id));
  const timers = new Set<NodeJS.Timeout>();

  const imdsServer = http.createServer((req, res) => {
    const m = (req.url ?? '').match(/^\/(i-[0-9a-f]+)(\/.*)$/);
    if (!m) {
      res.writeHead(404).end();
      return;
    }
    req.resume();
    req.on('end', () => imds.handle(m[1] as string, (m[2] as string).split('?')[0] as string, req, res));
  });
  const imdsPort = await listen(imdsServer);
  const imdsUrl = (id: string) => `http://127.0.0.1:${imdsPort}/${id}`;

  const isOnline = (i: FleetInstance) => i.state === 'running' && Date.now() >= i.onlineAt.getTime();

  function markTerminated(id: string, spot: boolean): void {
    const inst = instances.get(id);
    if (!inst || inst.state === 'terminated') return;
    inst.state = 'terminated';
    inst.terminatedAt = new Date();
    if (spot) inst.spotTermination ??= { at: inst.terminatedAt };
    killInstanceProcesses(id);
    for (const resolve of terminationWaiters.get(id) ?? []) resolve();
    terminationWaiters.delete(id);
  }

  function forward(req: IncomingMessage, body: Buffer): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> {
    return new Promise((resolve, reject) => {
      const headers = { ...req.headers, host: moto.host };
      const upstream = http.request(
        { hostname: moto.hostname, port: moto.port, method: req.method, path: req.url, headers },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => resolve({ status: res.statusCode ?? 502, headers: res.headers, body: Buffer.concat(chunks) }));
          res.on('error', reject);
        },
      );
      upstream.on('error', reject);
      upstream.end(body);
    });
  }

  function ssmAnswer(aws: AwsRequest): WireError | undefined {
    const json = aws.json ?? {};
    if (aws.action === 'DescribeInstanceInformation') {
      const filters = (json.Filters as { Key?: string; Values?: string[] }[] | undefined) ?? [];
      const legacy = (json.InstanceInformationFilterList as { key?: string; valueSet?: string[] }[] | undefined) ?? [];
      const ids = [
        ...filters.filter((f) => f.Key === 'InstanceIds').flatMap((f) => f.Values ?? []),
        ...legacy.filter((f) => f.key === 'InstanceIds').flatMap((f) => f.valueSet ?? []),
      ];
      // Like SSM: an id that is shutting down or terminated makes the whole call InvalidInstanceId.
      const gone = ids.filter((id) => instances.get(id)?.state === 'terminated');
      if (gone.length > 0) {
        return errorResponse('ssm', 400, 'InvalidInstanceId', `Instances [${gone.join(', ')}] not in a valid state for account 123456789012`);
      }
      const list = [...instances.values()]
        .filter((i) => isOnline(i) && (ids.length === 0 || ids.includes(i.id)))
        .map((i) => ({
          InstanceId: i.id,
          PingStatus: 'Online',
          LastPingDateTime: Date.now() / 1000,
          AgentVersion: '3.3.0.0',
          IsLatestVersion: true,
          PlatformType: 'Linux',
          PlatformName: 'Amazon Linux',
          ResourceType: 'EC2Instance',
          ComputerName: `ip-${i.id.slice(2, 10)}.ec2.internal`,
        }));
      return jsonResponse({ InstanceInformationList: list });
    }
    if (aws.action === 'GetCommandInvocation') {
      const inv = invocations.get(`${String(json.CommandId)}/${String(json.InstanceId)}`);
      if (!inv) return errorResponse('ssm', 400, 'InvocationDoesNotExist', 'The command invocation does not exist');
      return jsonResponse({
        CommandId: inv.commandId,
        InstanceId: inv.instanceId,
        DocumentName: 'AWS-RunShellScript',
        Status: inv.status,
        StatusDetails: inv.status,
        ResponseCode: inv.responseCode,
        StandardOutputContent: inv.stdout,
        StandardErrorContent: inv.stderr,
        ExecutionStartDateTime: inv.startedAt.toISOString(),
        ExecutionEndDateTime: inv.endedAt?.toISOString() ?? '',
      });
    }
    if (aws.action === 'SendCommand' && json.DocumentName === 'AWS-RunShellScript') {
      const ids = (json.InstanceIds as string[] | undefined) ?? [];
      const bad = ids.filter((id) => {
        const inst = instances.get(id);
        return !inst || !isOnline(inst);
      });
      if (ids.length === 0 || bad.length > 0) {
        return errorResponse('ssm', 400, 'InvalidInstanceId', `Instances [${bad.join(', ')}] not in a valid state for account 123456789012`);
      }
    }
    return undefined;
  }

  function startCommand(aws: AwsRequest, responseBody: Buffer): void {
    const json = aws.json ?? {};
    let commandId: string | undefined;
    try {
      commandId = (JSON.parse(responseBody.toString('utf8')) as { Command?: { CommandId?: string } }).Command?.CommandId;
    } catch {
      commandId = undefined;
    }
    if (!commandId) return;
    const params = (json.Parameters as Record<string, string[]> | undefined) ?? {};
    const script = (params.commands ?? []).join('\n');
    const timeoutSeconds = Number(params.executionTimeout?.[0] ?? 3600) || 3600;
    for (const id of (json.InstanceIds as string[] | undefined) ?? []) {
      const inst = instances.get(id);
      if (!inst) continue;
      const inv = runInSandbox({
        commandId,
        instanceId: id,
        script,
        sandboxDir: inst.sandboxDir,
        imdsUrl: imdsUrl(id),
        region,
        timeoutSeconds,
        env: opts.env,
      });
      inst.invocations.push(inv);
      invocations.set(`${commandId}/${id}`, inv);
    }
  }

  function registerLaunch(aws: AwsRequest, xml: string): void {
    for (const id of instanceIdsInXml(xml)) {
      if (instances.has(id)) continue;
      const at = xml.indexOf(`<instanceId>${id}</instanceId>`);
      const zone = xml.slice(at).match(/<availabilityZone>([^<]+)<\/availabilityZone>/)?.[1] ?? `${region}a`;
      const sandboxDir = path.join(workDir, id);
      fs.mkdirSync(sandboxDir, { recursive: true });
      const now = new Date();
      instances.set(id, {
        id,
        type: aws.params.InstanceType ?? 'unknown',
        zone,
        market: aws.params['InstanceMarketOptions.MarketType'] === 'spot' ? 'spot' : 'on-demand',
        launchedAt: now,
        runningAt: new Date(now.getTime() + timing.bootMs),
        onlineAt: new Date(now.getTime() + timing.bootMs + timing.ssmRegistrationMs),
        sandboxDir,
        state: 'running',
        invocations: [],
      });
      const userData = aws.params.UserData;
      if (userData) runUserDataAtBoot(id, Buffer.from(userData, 'base64').toString('utf8'));
    }
  }

  /**
   * cloud-init runs a user-data script that starts with `#!` once, as root, late in the first
   * boot (cloud-init docs, "User data formats": user data script); modelled as: when the instance
   * is running (timing.bootMs), in its sandbox, like an SSM command (its outcome in invocations,
   * command id `cloud-init`), before and independently of SSM registration.
   */
  function runUserDataAtBoot(id: string, script: string): void {
    if (!script.startsWith('#!')) return;
    const inst = instances.get(id);
    if (!inst) return;
    const start = () => {
      timers.delete(timer);
      if (inst.state !== 'running') return;
      inst.invocations.push(
        runInSandbox({ commandId: 'cloud-init', instanceId: id, script, sandboxDir: inst.sandboxDir, imdsUrl: imdsUrl(id), region, timeoutSeconds: 3600, env: opts.env }),
      );
    };
    const timer = setTimeout(start, Math.max(0, inst.runningAt.getTime() - Date.now()));
    timers.add(timer);
  }

  /**
   * DescribeInstanceStatus as EC2 answers it for running instances (moto knows no events or failed
   * checks): status "ok" with passed checks unless setHealth said otherwise.
   */
  function describeInstanceStatus(ids: string[]): string {
    const items = [...instances.values()]
      .filter((i) => i.state === 'running' && (ids.length === 0 || ids.includes(i.id)))
      .map((i) => {
        const check = (which: 'instance' | 'system') => {
          const bad = i.health?.impaired === which;
          return `<status>${bad ? 'impaired' : 'ok'}</status><details><item><name>reachability</name><status>${bad ? 'failed' : 'passed'}</status></item></details>`;
        };
        const ev = i.health?.event;
        const events = ev
          ? `<eventsSet><item><instanceEventId>instance-event-0123456789abcdef0</instanceEventId><code>${ev.code}</code><description>${ev.description}</description><notBefore>${ev.notBefore.toISOString()}</notBefore></item></eventsSet>`
          : '';
        return (
          `<item><instanceId>${i.id}</instanceId><availabilityZone>${i.zone}</availabilityZone>` +
          `<instanceState><code>16</code><name>running</name></instanceState>` +
          `<systemStatus>${check('system')}</systemStatus><instanceStatus>${check('instance')}</instanceStatus>${events}</item>`
        );
      });
    return (
      `<?xml version="1.0" encoding="UTF-8"?><DescribeInstanceStatusResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">` +
      `<requestId>fleet-${Date.now()}</requestId><instanceStatusSet>${items.join('')}</instanceStatusSet></DescribeInstanceStatusResponse>`
    );
  }

  function patchDescribe(xml: string): string {
    let out = xml;
    for (const inst of instances.values()) {
      // Still booting (timing.bootMs): EC2 says pending; moto says running at once.
      if (inst.state === 'running' && Date.now() < inst.runningAt.getTime()) out = patchInstanceState(out, inst.id, 0, 'pending');
      if (inst.stateReason) out = patchStateReason(out, inst.id, inst.stateReason.code, inst.stateReason.message, inst.stateReason.transition);
      if (!inst.spotTermination) continue;
      const when = inst.spotTermination.at.toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' GMT');
      out = patchStateReason(
        out,
        inst.id,
        'Server.SpotInstanceTermination',
        'Server.SpotInstanceTermination: Spot instance termination',
        `Service initiated (${when})`,
      );
    }
    return out;
  }

  const proxy = http.createServer(async (req, res) => {
    try {
      const body = await readBody(req);
      const aws = parseRequest(req.method ?? 'GET', req.url ?? '/', req.headers, body);
      const record: CallRecord = {
        service: aws.service,
        action: aws.action,
        status: 0,
        injected: false,
        fromSdk: aws.userAgent.includes('aws-sdk-js'),
        at: Date.now(),
      };
      calls.push(record);
      res.on('finish', () => {
        record.ms = Date.now() - record.at;
      });

      const token = aws.service === 'ec2' && aws.action === 'RunInstances' ? aws.params.ClientToken : undefined;
      const tokenKey = token ? JSON.stringify(Object.entries(aws.params).filter(([k]) => k !== 'ClientToken').sort()) : '';
      const earlier = token ? clientTokens.get(token) : undefined;
      if (earlier) {
        if (earlier.params !== tokenKey) {
          const wire = errorResponse('ec2', 400, 'IdempotentParameterMismatch', `The client token you have provided is associated with a resource that is already deleted or has different parameters. Please use a different client token.`);
          record.status = wire.status;
          return sendWire(res, wire);
        }
        record.status = earlier.status;
        res.writeHead(earlier.status, { ...earlier.headers, 'content-length': String(earlier.body.length) });
        return res.end(earlier.body);
      }
      if (aws.service === 'ec2' && aws.action === 'DescribeInstanceStatus') {
        const body = describeInstanceStatus(listParam(aws.params, 'InstanceId'));
        record.status = 200;
        res.writeHead(200, { 'content-type': 'text/xml;charset=UTF-8', 'content-length': Buffer.byteLength(body) });
        return res.end(body);
      }

      const fault = faults.match(aws);
      if (fault) {
        record.status = fault.status;
        record.injected = true;
        return sendWire(res, fault);
      }
      const priceAnswer = prices.answer(aws);
      if (priceAnswer) {
        record.status = priceAnswer.status;
        return sendWire(res, priceAnswer);
      }
      const accountAnswer = await account.answer(aws);
      if (accountAnswer) {
        record.status = accountAnswer.status;
        return sendWire(res, accountAnswer);
      }
      if (aws.service === 'ssm') {
        const answer = ssmAnswer(aws);
        if (answer) {
          record.status = answer.status;
          return sendWire(res, answer);
        }
      }

      const upstream = await forward(req, body);
      let payload = upstream.body;
      // S3 throughput (timing.s3BytesPerSecond): the request's payload, up or down, takes its time.
      if (aws.service === 's3') {
        const wait = s3TransferMs(timing, Math.max(body.length, payload.length));
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      }
      if (upstream.status === 200 && aws.service === 'ec2') {
        const xml = payload.toString('utf8');
        if (aws.action === 'RunInstances') {
          registerLaunch(aws, xml);
          if (token) {
            const headers = { ...upstream.headers };
            delete headers['transfer-encoding'];
            clientTokens.set(token, { params: tokenKey, status: upstream.status, headers, body: payload });
          }
        }
        if (aws.action === 'TerminateInstances') for (const id of listParam(aws.params, 'InstanceId')) markTerminated(id, false);
        if (aws.action === 'DescribeInstances') payload = Buffer.from(withoutInstances(patchDescribe(xml), hiddenNow()), 'utf8');
        if (aws.action === 'DescribeImages') payload = Buffer.from(account.patchDescribeImages(xml), 'utf8');
      }
      if (upstream.status === 200 && aws.service === 'ssm' && aws.action === 'SendCommand') startCommand(aws, payload);

      record.status = upstream.status;
      const headers = { ...upstream.headers };
      delete headers['transfer-encoding'];
      headers['content-length'] = String(payload.length);
      res.writeHead(upstream.status, headers);
      res.end(payload);
    } catch (err) {
      if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' });
      res.end(`fleet proxy error: ${String(err)}`);
    }
  });
  const proxyPort = await listen(proxy);

  async function terminateInMoto(id: string): Promise<void> {
    await motoQuery(opts.motoUrl, 'ec2', { Action: 'TerminateInstances', 'InstanceId.1': id }, region);
  }

  const fleet: Fleet = {
    endpoint: `http://127.0.0.1:${proxyPort}`,
    motoUrl: opts.motoUrl,
    workDir,
    instances,
    calls,
    imds,
    faults,
    account,
    timing,
    prices,
    setTiming(next) {
      Object.assign(timing, next);
    },
    injectFault: (rule) => faults.add(rule),
    clearFaults: () => faults.clear(),
    imdsUrl,

    async deliverSpotNotice(instanceId, noticeOpts = {}) {
      const inst = instances.get(instanceId);
      if (!inst) throw new Error(`fleet: unknown instance ${instanceId}`);
      if (inst.state === 'terminated' || inst.spotAction) return;
      const terminateAfterMs = noticeOpts.terminateAfterMs ?? timing.noticeLeadMs;
      inst.spotAction = { action: 'terminate', time: new Date(Date.now() + terminateAfterMs).toISOString().replace(/\.\d+Z$/, 'Z') };
      const deadline = Date.now() + terminateAfterMs;
      // Like EC2, reclaim the instance at the deadline; earlier if everything on it has already stopped.
      const check = () => {
        timers.delete(timer);
        if (inst.state === 'terminated') return;
        if (Date.now() >= deadline || instanceProcesses(instanceId).length === 0) {
          // EC2 gives the spot reason from the moment the instance starts shutting down: a
          // DescribeInstances answered while moto terminates it must not show moto's user reason.
          inst.spotTermination = { at: new Date() };
          void terminateInMoto(instanceId)
            .catch(() => undefined)
            .then(() => markTerminated(instanceId, true));
          return;
        }
        timer = setTimeout(check, 200);
        timers.add(timer);
      };
      let timer = setTimeout(check, 500);
      timers.add(timer);
    },

    whenTerminated(instanceId) {
      const inst = instances.get(instanceId);
      if (!inst || inst.state === 'terminated') return Promise.resolve();
      return new Promise((resolve) => {
        const list = terminationWaiters.get(instanceId) ?? [];
        list.push(resolve);
        terminationWaiters.set(instanceId, list);
      });
    },

    async terminateOutOfBand(instanceId) {
      await terminateInMoto(instanceId);
      markTerminated(instanceId, false);
    },

    async stopInstance(instanceId, stopOpts = {}) {
      const inst = instances.get(instanceId);
      if (!inst) throw new Error(`fleet: unknown instance ${instanceId}`);
      await motoQuery(opts.motoUrl, 'ec2', { Action: 'StopInstances', 'InstanceId.1': instanceId }, region);
      killInstanceProcesses(instanceId);
      const when = new Date().toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' GMT');
      if (stopOpts.spot) {
        inst.stateReason = {
          code: 'Server.SpotInstanceShutdown',
          message: 'Server.SpotInstanceShutdown: Spot instance shutdown',
          transition: `Service initiated (${when})`,
        };
      }
    },

    setHealth(instanceId, health) {
      const inst = instances.get(instanceId);
      if (!inst) throw new Error(`fleet: unknown instance ${instanceId}`);
      inst.health = health;
      // The same event in the instance's metadata service, in IMDS's own format.
      const gmt = (d: Date) => d.toUTCString().replace(/^\w+, /, '');
      inst.scheduledEvents = health.event
        ? [{ Code: health.event.code, Description: health.event.description, EventId: 'instance-event-0123456789abcdef0', NotBefore: gmt(health.event.notBefore), State: 'active' }]
        : [];
    },

    async failAtLaunch(instanceId, code, message) {
      const inst = instances.get(instanceId);
      if (!inst) throw new Error(`fleet: unknown instance ${instanceId}`);
      await terminateInMoto(instanceId);
      markTerminated(instanceId, false);
      const when = new Date().toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' GMT');
      inst.stateReason = { code, message: `${code}: ${message}`, transition: `Server initiated (${when})` };
    },

    hideNewInstances(ms) {
      hideWindowMs = ms;
      return () => {
        hideWindowMs = 0;
      };
    },

    async liveInMoto(run) {
      const params: Record<string, string> = {
        Action: 'DescribeInstances',
        'Filter.1.Name': 'instance-state-name',
        'Filter.1.Value.1': 'pending',
        'Filter.1.Value.2': 'running',
        'Filter.1.Value.3': 'stopping',
        'Filter.1.Value.4': 'stopped',
      };
      if (run) Object.assign(params, { 'Filter.2.Name': 'tag:runctl:run', 'Filter.2.Value.1': run });
      return instanceIdsInXml(await motoQuery(opts.motoUrl, 'ec2', params, region));
    },

    async close() {
      for (const t of timers) clearTimeout(t);
      for (const id of instances.keys()) killInstanceProcesses(id);
      const closed = Promise.all([
        new Promise<void>((r) => proxy.close(() => r())),
        new Promise<void>((r) => imdsServer.close(() => r())),
      ]);
      proxy.closeAllConnections();
      imdsServer.closeAllConnections();
      await closed;
      if (ownsWorkDir) fs.rmSync(workDir, { recursive: true, force: true });
    },
  };
  return fleet;
}
