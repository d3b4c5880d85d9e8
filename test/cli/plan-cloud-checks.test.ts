// `runctl plan` and `apply` check the instance types of runs they would launch against the cloud
// (DescribeInstanceTypeOfferings, here moto's offerings data through the real SDK): a type offered
// nowhere asked is an error at its list item and nothing is launched for that run; a type missing
// from some zones is a warning; a check that cannot be made is said and skipped. Problems also
// reach --format json and GitHub annotations; runs already launched cost no call.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { freePort, motoQuery } from '../support/moto.js';
import { motoRunManifest, useMotoProject } from './support.js';

const RUNCTL = path.resolve('bin/runctl.js');
const BUCKET = 'runctl-cloud-checks';
const PROFILE = 'runctl-cloud-checks';
const { moto, project } = useMotoProject({ prefix: 'runctl-cloud-checks-', bucket: BUCKET, profile: PROFILE });

function spec(name: string, resources: string[]): string {
  return motoRunManifest(name, { bucket: BUCKET, resources: ['image: ami-12c6146b', `iamInstanceProfile: ${PROFILE}`, ...resources] });
}

const SECRET = 'testing-secret-never-printed';

function runctl(endpoint: string, ...args: string[]) {
  return runctlWith({ AWS_ENDPOINT_URL: endpoint }, ...args);
}

function runctlWith(env: Record<string, string | undefined>, ...args: string[]) {
  const merged: Record<string, string | undefined> = {
    ...process.env,
    NO_COLOR: '1',
    GITHUB_ACTIONS: '',
    AWS_ACCESS_KEY_ID: 'testing',
    AWS_SECRET_ACCESS_KEY: SECRET,
    AWS_REGION: 'us-east-1',
    AWS_EC2_METADATA_DISABLED: 'true',
    ...env,
  };
  for (const [k, v] of Object.entries(merged)) if (v === undefined) delete merged[k];
  return spawnSync(process.execPath, [RUNCTL, ...args], { cwd: project.dir, encoding: 'utf8', env: merged });
}

const TYPO = 'runs/cc-typo.yaml:15:9 error spec.resources.instanceTypes[1]: g5.xlarg is not offered in region us-east-1 (did you mean g5.xlarge?); check the spelling, or choose another type or region';

beforeAll(() => {
  const dir = project.dir;
  fs.writeFileSync(path.join(dir, 'runs', 'cc-good.yaml'), spec('cc-good', ['instanceTypes: [t3.micro]', 'market: on-demand']));
  fs.writeFileSync(path.join(dir, 'runs', 'cc-typo.yaml'), spec('cc-typo', ['instanceTypes:', '  - m5.large', '  - g5.xlarg']));
  fs.writeFileSync(
    path.join(dir, 'runs', 'cc-zonal.yaml'),
    // c5.xlarge is not offered in us-east-1e (in AWS, and in moto's offerings data).
    spec('cc-zonal', ['instanceTypes: [c5.xlarge]', 'availabilityZones: [us-east-1a, us-east-1e]']),
  );
});

async function instancesOf(run: string): Promise<number> {
  const xml = await motoQuery(moto.url, 'ec2', { Action: 'DescribeInstances', 'Filter.1.Name': 'tag:runctl:run', 'Filter.1.Value.1': run });
  return (xml.match(/<instanceId>/g) ?? []).length;
}

describe('plan checks instance types against the cloud', () => {
  it('fails on a type offered nowhere asked, at its list item, and warns on one missing from a zone', () => {
    const out = runctl(moto.url, 'plan', '--detailed-exitcode');
    expect(out.status, out.stderr).toBe(1);
    expect(out.stderr.split('\n')).toContain(TYPO);
    expect(out.stderr).toMatch(/runs\/cc-zonal\.yaml:13:21 warning spec\.resources\.instanceTypes\[0\]: c5\.xlarge is not offered in us-east-1e \(offered in us-east-1a\)/);
    // The run with the bad type is not planned for creation; the others are.
    expect(out.stdout).toMatch(/\+ create cc-good/);
    expect(out.stdout).toMatch(/\+ create cc-zonal/);
    expect(out.stdout).not.toMatch(/create cc-typo/);
  });

  it('puts the problems in --format json, and as annotations in GitHub Actions', () => {
    const json = runctl(moto.url, 'plan', '--format', 'json');
    expect(json.status, json.stderr).toBe(1);
    const diagnostics = (JSON.parse(json.stdout) as { diagnostics: Array<Record<string, unknown>> }).diagnostics;
    expect(diagnostics.map((d) => [d.file, d.line, d.column, d.path, d.severity])).toEqual([
      ['runs/cc-typo.yaml', 15, 9, 'spec.resources.instanceTypes[1]', 'error'],
      ['runs/cc-zonal.yaml', 13, 21, 'spec.resources.instanceTypes[0]', 'warning'],
    ]);

    const gh = runctlWith({ AWS_ENDPOINT_URL: moto.url, GITHUB_ACTIONS: 'true' }, 'plan');
    expect(gh.status, gh.stderr).toBe(1);
    expect(gh.stderr).toContain('::error file=runs/cc-typo.yaml,line=15,col=9::spec.resources.instanceTypes[1]: g5.xlarg is not offered');
    expect(gh.stderr).toContain('::warning file=runs/cc-zonal.yaml,line=13,col=21::spec.resources.instanceTypes[0]: c5.xlarge is not offered in us-east-1e');
  });

  it('--no-cloud-checks plans without asking', () => {
    const out = runctl(`http://127.0.0.1:9`, 'plan', '--detailed-exitcode', '--no-cloud-checks');
    expect(out.status, out.stderr).toBe(2);
    expect(out.stderr).not.toContain('not offered');
    expect(out.stderr).not.toContain('could not check');
    expect(out.stdout).toMatch(/\+ create cc-typo/);
    for (const command of ['plan', 'apply']) {
      expect(runctl(moto.url, command, '--help').stdout).toMatch(/--no-cloud-checks\s+skip checking instance types/);
    }
  });

  it('says when it cannot reach the cloud, and plans anyway', async () => {
    const closed = `http://127.0.0.1:${await freePort()}`;
    const out = runctl(closed, 'plan', '--detailed-exitcode');
    expect(out.status, out.stderr).toBe(2);
    for (const run of ['cc-good', 'cc-typo', 'cc-zonal']) {
      expect(out.stderr).toMatch(
        new RegExp(`^runctl: warning: could not check instance types of ${run} against EC2 offerings: EC2 DescribeInstanceTypeOfferings in us-east-1 failed temporarily \\(ECONNREFUSED\\)`, 'm'),
      );
    }
    expect(out.stderr).not.toContain('runctl will retry');
    expect(out.stderr).not.toContain(SECRET);
    expect(out.stdout).toMatch(/\+ create cc-typo/);
  });

  it('says when there are no credentials, and plans anyway', () => {
    const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'runctl-no-aws-'));
    try {
      const out = runctlWith(
        {
          AWS_ENDPOINT_URL: moto.url,
          AWS_ACCESS_KEY_ID: undefined,
          AWS_SECRET_ACCESS_KEY: undefined,
          AWS_SESSION_TOKEN: undefined,
          AWS_PROFILE: undefined,
          AWS_CONFIG_FILE: path.join(empty, 'config'),
          AWS_SHARED_CREDENTIALS_FILE: path.join(empty, 'credentials'),
          AWS_WEB_IDENTITY_TOKEN_FILE: undefined,
          AWS_CONTAINER_CREDENTIALS_RELATIVE_URI: undefined,
          AWS_CONTAINER_CREDENTIALS_FULL_URI: undefined,
        },
        'plan',
        '--detailed-exitcode',
      );
      expect(out.status, out.stderr).toBe(2);
      expect(out.stderr).toContain('runctl: warning: could not check instance types of cc-typo against EC2 offerings: EC2 DescribeInstanceTypeOfferings in us-east-1 rejected the AWS credentials');
      expect(out.stderr).toContain('aws sso login');
    } finally {
      fs.rmSync(empty, { recursive: true, force: true });
    }
  });

  it('apply launches nothing for the run that fails the check, and exits 1', async () => {
    const out = runctl(moto.url, 'apply');
    expect(out.status, out.stdout + out.stderr).toBe(1);
    expect(out.stderr.split('\n')).toContain(TYPO);
    expect(await instancesOf('cc-typo')).toBe(0);
    expect(await instancesOf('cc-good')).toBe(1);
    // Clean up what the pass launched: the controller that follows would terminate it on delete.
    const xml = await motoQuery(moto.url, 'ec2', {
      Action: 'DescribeInstances',
      'Filter.1.Name': 'tag:runctl:run',
      'Filter.1.Value.1': 'cc-good',
      'Filter.1.Value.2': 'cc-zonal',
    });
    const ids = [...xml.matchAll(/<instanceId>(i-[0-9a-f]+)<\/instanceId>/g)].map((m) => m[1]!);
    const params: Record<string, string> = { Action: 'TerminateInstances' };
    ids.forEach((id, i) => (params[`InstanceId.${i + 1}`] = id));
    if (ids.length) await motoQuery(moto.url, 'ec2', params);
  }, 120_000);

  it('after the launch, runs that keep going cost no call; a bad edit to one keeps its last spec', () => {
    // The runs launched by apply are now planned no-op: with the cloud unreachable, only the run
    // that would still be created is (not) checked.
    const steady = runctl(`http://127.0.0.1:9`, 'plan');
    expect(steady.stderr).toContain('could not check instance types of cc-typo');
    expect(steady.stderr).not.toContain('of cc-good');
    expect(steady.stderr).not.toContain('of cc-zonal');

    // A new generation of a running run with a type not offered: refused, as if the file had an error.
    fs.writeFileSync(path.join(project.dir, 'runs', 'cc-good.yaml'), spec('cc-good', ['instanceTypes: [t3.micr]', 'market: on-demand']));
    const out = runctl(moto.url, 'plan', '--detailed-exitcode');
    expect(out.status, out.stderr).toBe(1);
    expect(out.stderr.split('\n')).toContain(
      'runs/cc-good.yaml:13:21 error spec.resources.instanceTypes[0]: t3.micr is not offered in region us-east-1 (did you mean t3.micro?); check the spelling, or choose another type or region',
    );
    expect(out.stdout).toContain('cc-good (runs/cc-good.yaml has errors: the run keeps its last valid spec)');
    expect(out.stdout).not.toMatch(/new generation cc-good/);
  });
});
