// Local instances with real processes: launch and adoption, batched observation, the instance
// host's IMDS and its enforcement of spot notices, and termination that leaves nothing running.
import { existsSync } from 'node:fs';
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { TerminalError } from '../../../src/providers/types.js';
import { TestRoot, alive, groupPids, spec, startGroup, waitFor } from './helpers.js';

let root: TestRoot;

beforeEach(async () => {
  root = await TestRoot.create();
});
afterEach(async () => {
  await root.cleanup();
});

const key = (run: string, attempt = 1, generation = 1) => ({ run, generation, attempt });

async function hostOf(sandboxDir: string): Promise<{ pid: number; imdsUrl: string }> {
  return waitFor('the instance host to announce itself', async () => {
    try {
      return JSON.parse(await readFile(path.join(sandboxDir, 'host.json'), 'utf8')) as { pid: number; imdsUrl: string };
    } catch {
      return undefined;
    }
  });
}

async function imdsGet(imdsUrl: string, item: string, withToken: boolean): Promise<Response> {
  const headers: Record<string, string> = {};
  if (withToken) {
    const res = await fetch(`${imdsUrl}/latest/api/token`, { method: 'PUT', headers: { 'X-aws-ec2-metadata-token-ttl-seconds': '300' } });
    headers['X-aws-ec2-metadata-token'] = await res.text();
  }
  return fetch(`${imdsUrl}/latest/meta-data/${item}`, { headers });
}

describe('launch', () => {
  it('is idempotent per attempt: a second launch adopts the sandbox the first made', async () => {
    const p = root.provider();
    const first = await p.launch({ ...key('idem'), spec: spec(), controller: 'default' });
    const second = await p.launch({ ...key('idem'), spec: spec(), controller: 'default' });
    expect(first.adopted).toBe(false);
    expect(second).toEqual({ instance: first.instance, adopted: true });
    expect(first.instance).toMatchObject({ type: 'local', market: 'spot', pricePerHour: 0 });
    expect(first.instance.id).toMatch(/^local-idem-g1-a1-[0-9a-f]+$/);

    // Another controller process (a second provider object on the same root) adopts it too.
    const third = await root.provider().launch({ ...key('idem'), spec: spec(), controller: 'default' });
    expect(third.adopted).toBe(true);
    expect(third.instance.id).toBe(first.instance.id);

    const sandboxes = (await readdir(path.join(p.root, 'instances'))).filter((n) => n.startsWith('local-'));
    expect(sandboxes).toEqual([first.instance.id]);
    const tags = JSON.parse(await readFile(path.join(p.sandboxDir(first.instance.id), 'tags.json'), 'utf8'));
    expect(tags).toMatchObject({ 'runctl:run': 'idem', 'runctl:generation': '1', 'runctl:attempt': '1', 'runctl:controller': 'default' });
  });

  it('makes exactly one sandbox when launches of one attempt race', async () => {
    const a = root.provider();
    const b = root.provider();
    const results = await Promise.all([
      a.launch({ ...key('race'), spec: spec(), controller: 'default' }),
      b.launch({ ...key('race'), spec: spec(), controller: 'default' }),
      a.launch({ ...key('race'), spec: spec(), controller: 'default' }),
    ]);
    expect(new Set(results.map((r) => r.instance.id)).size).toBe(1);
    expect(results.filter((r) => !r.adopted)).toHaveLength(1);
  });

  it('reports on-demand when the market allows no spot, and a new attempt gets a new sandbox', async () => {
    const p = root.provider();
    const one = await p.launch({ ...key('od', 1), spec: spec({ resources: { market: 'on-demand' } }), controller: 'default' });
    const two = await p.launch({ ...key('od', 2), spec: spec({ resources: { market: 'spot-then-on-demand' } }), controller: 'default' });
    expect(one.instance.market).toBe('on-demand');
    expect(two.instance.market).toBe('spot');
    expect(two.instance.id).not.toBe(one.instance.id);
  });

  it('rejects a run name that is not a DNS-1123 label', async () => {
    const p = root.provider();
    await expect(p.launch({ ...key('../escape'), spec: spec(), controller: 'default' })).rejects.toThrow(TerminalError);
  });
});

describe('observe', () => {
  it('returns every requested run in one pass, only this controller\'s instances, with readiness', async () => {
    const p = root.provider();
    const other = root.provider({ controller: 'ci' });
    const a = await p.launch({ ...key('alpha'), spec: spec(), controller: 'default' });
    const b = await p.launch({ ...key('beta'), spec: spec(), controller: 'default' });
    await other.launch({ ...key('alpha', 7), spec: spec(), controller: 'ci' });
    await hostOf(p.sandboxDir(a.instance.id));
    await hostOf(p.sandboxDir(b.instance.id));

    const seen = await p.observe(['alpha', 'beta', 'gamma']);
    expect([...seen.keys()].sort()).toEqual(['alpha', 'beta', 'gamma']);
    expect(seen.get('gamma')).toEqual([]);
    expect(seen.get('alpha')).toEqual([
      { run: 'alpha', generation: 1, attempt: 1, instance: a.instance, state: 'running', ready: true },
    ]);
    expect(seen.get('beta')?.map((o) => [o.instance.id, o.state, o.ready])).toEqual([[b.instance.id, 'running', true]]);

    // The other controller sees its own instance and not ours.
    const theirs = await other.observe(['alpha']);
    expect(theirs.get('alpha')?.map((o) => o.attempt)).toEqual([7]);
  });

  it('reports an instance whose host died as terminated, and stops what it left running', async () => {
    const p = root.provider({ terminateGraceMs: 500 });
    const { instance } = await p.launch({ ...key('crash'), spec: spec(), controller: 'default' });
    const dir = p.sandboxDir(instance.id);
    const host = await hostOf(dir);
    const job = await startGroup('sleep 300 & sleep 300; wait');
    await waitFor('the job group', () => groupPids(job).length === 3);
    const jobPids = groupPids(job);
    await mkdir(path.join(dir, 'agent'), { recursive: true });
    await writeFile(path.join(dir, 'agent', 'job.pgid'), `${job}\n`);

    process.kill(host.pid, 'SIGKILL');
    await waitFor('the host to die', () => !alive(host.pid));
    const [seen] = (await p.observe(['crash'])).get('crash') ?? [];
    expect(seen).toMatchObject({ state: 'terminated', ready: false, stateReason: expect.stringMatching(/instance host exited unexpectedly/) });
    expect(seen?.spotInterruption).toBeUndefined();
    for (const pid of jobPids) expect(alive(pid)).toBe(false);
  });
});

describe('the instance host', () => {
  it('serves IMDS only to callers with a token, with the instance id', async () => {
    const p = root.provider();
    const { instance } = await p.launch({ ...key('imds'), spec: spec(), controller: 'default' });
    const host = await hostOf(p.sandboxDir(instance.id));
    expect((await imdsGet(host.imdsUrl, 'instance-id', false)).status).toBe(401);
    const res = await imdsGet(host.imdsUrl, 'instance-id', true);
    expect(res.status).toBe(200);
    expect(await res.text()).toBe(instance.id);
    expect((await imdsGet(host.imdsUrl, 'spot/instance-action', true)).status).toBe(404);
  });

  it('shows a spot notice through IMDS, then takes the instance away at the notice time', async () => {
    const p = root.provider({ spotNoticeLeadMs: 1500 });
    const { instance } = await p.launch({ ...key('spot'), spec: spec(), controller: 'default' });
    const dir = p.sandboxDir(instance.id);
    const host = await hostOf(dir);
    const job = await startGroup('sleep 300 & sleep 300; wait');
    await waitFor('the job group', () => groupPids(job).length === 3);
    const jobPids = groupPids(job);
    await mkdir(path.join(dir, 'agent'), { recursive: true });
    await writeFile(path.join(dir, 'agent', 'job.json'), JSON.stringify({ pid: job, pgid: job }));

    const before = Date.now();
    await p.deliverSpotNotice(key('spot'), instance.id);
    const res = await imdsGet(host.imdsUrl, 'spot/instance-action', true);
    expect(res.status).toBe(200);
    const notice = JSON.parse(await res.text()) as { action: string; time: string };
    expect(notice.action).toBe('terminate');
    expect(Date.parse(notice.time)).toBeGreaterThanOrEqual(before + 1500 - 1000);

    // While it lasts, the notice is already visible to the controller.
    const [early] = (await p.observe(['spot'])).get('spot') ?? [];
    expect(early).toMatchObject({ state: 'running', spotInterruption: { reason: 'Server.SpotInstanceTermination' } });

    // A second notice does not move the deadline.
    await p.deliverSpotNotice(key('spot'), instance.id);
    const again = JSON.parse(await (await imdsGet(host.imdsUrl, 'spot/instance-action', true)).text()) as { time: string };
    expect(again.time).toBe(notice.time);

    const gone = await waitFor(
      'the host to take the instance away',
      async () => {
        const [o] = (await p.observe(['spot'])).get('spot') ?? [];
        return o?.state === 'terminated' ? o : undefined;
      },
      15_000,
    );
    expect(gone.stateReason).toMatch(/^Server\.SpotInstanceTermination/);
    expect(gone.spotInterruption).toEqual({ noticedAt: early?.spotInterruption?.noticedAt, reason: 'Server.SpotInstanceTermination' });
    expect(Date.parse(gone.spotInterruption!.noticedAt)).toBeGreaterThanOrEqual(before);
    await waitFor('the host to exit', () => !alive(host.pid));
    for (const pid of jobPids) expect(alive(pid)).toBe(false);
    expect(existsSync(path.join(dir, 'tags.json'))).toBe(true);
  });
});

describe('terminate', () => {
  it('leaves no process of the sandbox alive: host, recorded groups, and processes that left their group', async () => {
    const p = root.provider({ terminateGraceMs: 1000 });
    const { instance } = await p.launch({ ...key('term'), spec: spec(), controller: 'default' });
    const dir = p.sandboxDir(instance.id);
    const host = await hostOf(dir);
    await mkdir(path.join(dir, 'agent'), { recursive: true });
    // A job whose process group ignores SIGTERM (so SIGKILL is needed), recorded as the agent does.
    const stubborn = await startGroup("trap '' TERM; sleep 300 & sleep 300 & wait");
    await waitFor('the stubborn group', () => groupPids(stubborn).length === 3);
    await writeFile(path.join(dir, 'agent', 'job.json'), JSON.stringify({ pid: stubborn, pgid: stubborn }));
    // A daemon that left every group the provider knows of; only the sandbox's marker finds it.
    const escaped = await startGroup('exec sleep 300', { ...process.env, RUNCTL_LOCAL_INSTANCE: instance.id });
    const pids = [host.pid, ...groupPids(stubborn), escaped];
    for (const pid of pids) expect(alive(pid)).toBe(true);

    await p.terminate(instance.id);
    for (const pid of pids) expect(alive(pid)).toBe(false);
    const [seen] = (await p.observe(['term'])).get('term') ?? [];
    expect(seen).toMatchObject({ state: 'terminated', stateReason: expect.stringMatching(/^Client\.UserInitiatedShutdown/) });
    expect(existsSync(path.join(dir, 'work'))).toBe(false);
  });

  it('is idempotent: terminating a terminated, or unknown, instance succeeds', async () => {
    const p = root.provider();
    const { instance } = await p.launch({ ...key('twice'), spec: spec(), controller: 'default' });
    await hostOf(p.sandboxDir(instance.id));
    await p.terminate(instance.id);
    const record = await readFile(path.join(p.sandboxDir(instance.id), 'terminated.json'), 'utf8');
    await p.terminate(instance.id);
    await expect(p.terminate('local-never-g1-a1-0badc0de')).resolves.toBeUndefined();
    // The first termination's record stands.
    expect(await readFile(path.join(p.sandboxDir(instance.id), 'terminated.json'), 'utf8')).toBe(record);
    await expect(p.terminate('../../etc')).rejects.toThrow(TerminalError);
  });

  it('keeps a terminated sandbox\'s records for history, and prunes them once they are old enough', async () => {
    const keep = root.provider();
    const { instance } = await keep.launch({ ...key('old'), spec: spec(), controller: 'default' });
    await hostOf(keep.sandboxDir(instance.id));
    await keep.terminate(instance.id);
    expect((await keep.observe(['old'])).get('old')?.map((o) => o.state)).toEqual(['terminated']);

    const prune = root.provider({ retainTerminatedMs: 0 });
    await new Promise((r) => setTimeout(r, 5));
    expect((await prune.observe(['old'])).get('old')).toEqual([]);
    expect(existsSync(prune.sandboxDir(instance.id))).toBe(false);
  });
});
