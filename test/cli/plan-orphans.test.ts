// Issue 11, fault 3: instances carrying this controller's tags that no run will terminate (run
// finished, or re-created under another uid) are shown by `plan` as orphaned instances, in text,
// markdown and json, count as changes for --detailed-exitcode, and are terminated by `apply` (the
// controller's orphan sweep). Moto through the real SDK; instances tagged as runctl tags them.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { freePort, motoQuery } from '../support/moto.js';
import { motoRunManifest, useMotoProject } from './support.js';

const RUNCTL = path.resolve('bin/runctl.js');
const BUCKET = 'runctl-plan-orphans';
const PROFILE = 'runctl-plan-orphans';
const OTHER_UID = '0f3c2a9e-5b1d-4c7a-9e2f-1a2b3c4d5e6f';
const { moto, project } = useMotoProject({ prefix: 'runctl-plan-orphans-', bucket: BUCKET, profile: PROFILE });

function spec(name: string, suspend: boolean): string {
  return motoRunManifest(name, {
    bucket: BUCKET,
    spec: [`suspend: ${suspend}`],
    resources: ['image: ami-12c6146b', `iamInstanceProfile: ${PROFILE}`, 'instanceTypes: [t3.micro]', 'market: on-demand'],
  });
}

function runctl(endpoint: string, ...args: string[]) {
  const env: Record<string, string | undefined> = {
    ...process.env,
    NO_COLOR: '1',
    GITHUB_ACTIONS: '',
    AWS_ACCESS_KEY_ID: 'testing',
    AWS_SECRET_ACCESS_KEY: 'testing',
    AWS_REGION: 'us-east-1',
    AWS_EC2_METADATA_DISABLED: 'true',
    AWS_ENDPOINT_URL: endpoint,
  };
  return spawnSync(process.execPath, [RUNCTL, ...args], { cwd: project.dir, encoding: 'utf8', env });
}

/** An instance tagged as runctl tags the instances of `run` (controller `default`). */
async function taggedInstance(run: string, uid: string, attempt: number): Promise<string> {
  const tags = { 'runctl:run': run, 'runctl:uid': uid, 'runctl:generation': '1', 'runctl:attempt': String(attempt), 'runctl:controller': 'default' };
  const params: Record<string, string> = {
    Action: 'RunInstances',
    ImageId: 'ami-12c6146b',
    InstanceType: 't3.micro',
    MinCount: '1',
    MaxCount: '1',
    'TagSpecification.1.ResourceType': 'instance',
  };
  Object.entries(tags).forEach(([k, v], i) => {
    params[`TagSpecification.1.Tag.${i + 1}.Key`] = k;
    params[`TagSpecification.1.Tag.${i + 1}.Value`] = v;
  });
  const xml = await motoQuery(moto.url, 'ec2', params);
  return /<instanceId>(i-[0-9a-f]+)<\/instanceId>/.exec(xml)![1]!;
}

async function stateOf(id: string): Promise<string> {
  const xml = await motoQuery(moto.url, 'ec2', { Action: 'DescribeInstances', 'InstanceId.1': id });
  return /<instanceState>\s*<code>\d+<\/code>\s*<name>([a-z-]+)<\/name>/.exec(xml)![1]!;
}

beforeAll(() => {
  fs.writeFileSync(path.join(project.dir, 'runs', 'parked.yaml'), spec('parked', true));
});

describe('plan shows orphaned instances, apply terminates them', () => {
  let leftover: string;
  let earlier: string;
  let uid: string;

  it('a steady plan with no orphans has no changes', async () => {
    // parked is created Suspended: nothing is launched.
    const applied = runctl(moto.url, 'apply');
    expect(applied.status, applied.stdout + applied.stderr).toBe(0);
    const status = JSON.parse(fs.readFileSync(path.join(project.dir, '.runctl', 'state', 'runs', 'parked', 'status.json'), 'utf8')) as { uid?: string; status?: { uid?: string } };
    uid = (status.uid ?? status.status?.uid) as string;
    expect(uid).toMatch(/^[0-9a-f-]{36}$/);
    const out = runctl(moto.url, 'plan', '--detailed-exitcode');
    expect(out.status, out.stdout + out.stderr).toBe(0);
    expect(out.stdout).toContain('No changes.');
    expect(JSON.parse(runctl(moto.url, 'plan', '--format', 'json').stdout).orphanedInstances).toEqual([]);
  });

  it('lists an instance of the Suspended run and one of an earlier run of the same name, in every format', async () => {
    // One left by this incarnation (EC2 did not show it when the run ended), one by an earlier one.
    // (A Suspended run created suspended is at attempt 0; an instance of attempt 1 would be a
    // launch being recorded, never an orphan.)
    leftover = await taggedInstance('parked', uid, 0);
    earlier = await taggedInstance('parked', OTHER_UID, 1);

    const text = runctl(moto.url, 'plan', '--detailed-exitcode');
    expect(text.status, text.stdout + text.stderr).toBe(2);
    expect(text.stdout).toContain(`  - terminate orphaned instance ${leftover} (run parked, uid ${uid}, generation 1, attempt 0, running)`);
    expect(text.stdout).toContain('      why: run finished: run parked is Suspended');
    expect(text.stdout).toContain(`  - terminate orphaned instance ${earlier} (run parked, uid ${OTHER_UID}, generation 1, attempt 1, running)`);
    expect(text.stdout).toContain(`      why: run re-created: it belongs to an earlier run named parked (uid ${OTHER_UID}), since deleted and re-created`);
    expect(text.stdout).toContain('Plan: 2 orphaned instances to terminate; 1 unchanged.');

    const md = runctl(moto.url, 'plan', '--format', 'markdown');
    expect(md.status, md.stderr).toBe(0);
    expect(md.stdout).toContain(`| \`${leftover}\` | \`parked\` | \`${uid}\` | 1 | 0 | running | run finished: run parked is Suspended |`);
    expect(md.stdout).toContain(`| \`${earlier}\` | \`parked\` | \`${OTHER_UID}\` | 1 | 1 | running | run re-created:`);

    const json = JSON.parse(runctl(moto.url, 'plan', '--format', 'json').stdout) as { changes: boolean; orphanedInstances: Array<Record<string, unknown>> };
    expect(json.changes).toBe(true);
    expect(json.orphanedInstances.map((o) => [o.instanceId, o.run, o.uid, o.cause])).toEqual(
      [
        [leftover, 'parked', uid, 'finished'],
        [earlier, 'parked', OTHER_UID, 're-created'],
      ].sort((a, b) => a[0]!.localeCompare(b[0]!)),
    );
  });

  it('--no-cloud-checks does not look; an unreachable cloud is a warning, not a failure', async () => {
    const skipped = runctl('http://127.0.0.1:9', 'plan', '--detailed-exitcode', '--no-cloud-checks');
    expect(skipped.status, skipped.stderr).toBe(0);
    expect(skipped.stderr).not.toContain('orphaned');
    expect(JSON.parse(runctl('http://127.0.0.1:9', 'plan', '--format', 'json', '--no-cloud-checks').stdout).orphanedInstances).toBeNull();

    const closed = `http://127.0.0.1:${await freePort()}`;
    const out = runctl(closed, 'plan', '--detailed-exitcode');
    expect(out.status, out.stderr).toBe(0);
    expect(out.stderr).toMatch(/^runctl: warning: could not look for orphaned instances \(aws\): EC2 DescribeInstances in us-east-1 failed temporarily \(ECONNREFUSED\).*\(gave up after retrying\)$/m);
    expect(out.stderr).not.toContain('runctl will retry');
  });

  it('apply terminates what plan listed, and the next plan is clean', async () => {
    const out = runctl(moto.url, 'apply');
    expect(out.status, out.stdout + out.stderr).toBe(0);
    expect(out.stdout).toContain(`terminate orphaned instance ${leftover}`);
    expect(out.stdout).toContain(`runctl: terminated orphaned instance ${leftover} (generation 1, attempt 0): run parked is Suspended`);
    expect(out.stdout).toContain(`runctl: terminated orphaned instance ${earlier} (generation 1, attempt 1)`);
    expect(['shutting-down', 'terminated']).toContain(await stateOf(leftover));
    expect(['shutting-down', 'terminated']).toContain(await stateOf(earlier));

    const after = runctl(moto.url, 'plan', '--detailed-exitcode');
    expect(after.status, after.stdout + after.stderr).toBe(0);
    expect(after.stdout).not.toContain('orphaned instance');
  });
});
