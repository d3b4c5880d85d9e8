// `runctl plan` checks the image of every run it would launch (issue 11 fault 7): a root snapshot
// larger than spec.resources.rootVolumeGiB is an error at that field, or at spec.resources.image
// when the field is left to its default, naming the field and the size needed; an image that does
// not exist, or whose architecture no listed instance type runs, is an error too. Through the real
// CLI and SDK against moto, with the fleet proxy supplying the Deep Learning AMI's root snapshot
// size (moto gives every image 15 GiB).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFleet, type Fleet } from '../support/fleet/index.js';
import { motoQuery } from '../support/moto.js';
import { motoRunManifest, useMotoProject } from './support.js';

const RUNCTL = path.resolve('bin/runctl.js');
const BUCKET = 'runctl-image-checks';
const PROFILE = 'runctl-image-checks';
const { moto, project } = useMotoProject({ prefix: 'runctl-image-checks-', bucket: BUCKET, profile: PROFILE });
let fleet: Fleet;
let dlami: string;

function spec(name: string, resources: string[]): string {
  return motoRunManifest(name, { bucket: BUCKET, resources: [`iamInstanceProfile: ${PROFILE}`, ...resources] });
}

/** The real CLI in a child process; asynchronous, because the fleet proxy lives in this process. */
function runctl(...args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [RUNCTL, ...args], {
      cwd: project.dir,
      env: {
        ...process.env,
        NO_COLOR: '1',
        GITHUB_ACTIONS: '',
        AWS_ENDPOINT_URL: fleet.endpoint,
        AWS_ACCESS_KEY_ID: 'testing',
        AWS_SECRET_ACCESS_KEY: 'testing',
        AWS_REGION: 'us-east-1',
        AWS_EC2_METADATA_DISABLED: 'true',
      },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

beforeAll(async () => {
  fleet = await startFleet({ motoUrl: moto.url });
  // An image of our own, standing for a Deep Learning AMI with a 120 GiB root snapshot.
  const run = await motoQuery(moto.url, 'ec2', { Action: 'RunInstances', ImageId: 'ami-12c6146b', InstanceType: 't3.micro', MinCount: '1', MaxCount: '1' });
  const instance = run.match(/<instanceId>(i-[0-9a-f]+)<\/instanceId>/)![1]!;
  const image = await motoQuery(moto.url, 'ec2', { Action: 'CreateImage', InstanceId: instance, Name: 'dlami-like' });
  dlami = image.match(/<imageId>(ami-[0-9a-f]+)<\/imageId>/)![1]!;
  await motoQuery(moto.url, 'ec2', { Action: 'TerminateInstances', 'InstanceId.1': instance });
  fleet.account.imageRootGiB.set(dlami, 120);

  const write = (name: string, resources: string[]) => fs.writeFileSync(path.join(project.dir, 'runs', `${name}.yaml`), spec(name, resources));
  write('ic-good', ['instanceTypes: [t3.micro]', 'image: ami-12c6146b', 'rootVolumeGiB: 20']);
  write('ic-small-root', ['instanceTypes: [t3.micro]', 'image: ami-12c6146b', 'rootVolumeGiB: 10']);
  write('ic-dlami', ['instanceTypes: [t3.micro]', `image: ${dlami}`]);
  write('ic-dlami-sized', ['instanceTypes: [t3.micro]', `image: ${dlami}`, 'rootVolumeGiB: 150']);
  write('ic-arch', ['instanceTypes: [m6g.large]', 'image: ami-12c6146b']);
  write('ic-arch-some', ['instanceTypes: [t3.micro, m6g.large]', 'image: ami-12c6146b']);
  write('ic-missing', ['instanceTypes: [t3.micro]', 'image: ami-0123456789abcdef0']);
});

afterAll(async () => {
  await fleet?.close();
});

describe('plan checks the image of the runs it would launch', () => {
  it('reports each image problem at its field, and plans only the runs without errors', async () => {
    const out = await runctl('plan', '--detailed-exitcode');
    expect(out.status, out.stderr).toBe(1);
    const lines = out.stderr.split('\n');
    expect(lines).toContain(
      'runs/ic-small-root.yaml:14:20 error spec.resources.rootVolumeGiB: image ami-12c6146b has a root snapshot of 15 GiB, larger than spec.resources.rootVolumeGiB (10 GiB); EC2 refuses the launch; set spec.resources.rootVolumeGiB to at least 15',
    );
    // Left to its default (100 GiB), the problem is placed at the image and still names the field.
    expect(lines).toContain(
      `runs/ic-dlami.yaml:13:12 error spec.resources.image: image ${dlami} has a root snapshot of 120 GiB, larger than spec.resources.rootVolumeGiB (100 GiB); EC2 refuses the launch; set spec.resources.rootVolumeGiB to at least 120`,
    );
    expect(lines).toContain(
      'runs/ic-arch.yaml:12:21 error spec.resources.instanceTypes[0]: m6g.large runs arm64 but image ami-12c6146b is x86_64; EC2 refuses this combination; choose an instance type that runs x86_64, or an image built for arm64',
    );
    expect(lines).toContain(
      'runs/ic-arch-some.yaml:12:31 warning spec.resources.instanceTypes[1]: m6g.large runs arm64 but image ami-12c6146b is x86_64; EC2 refuses this combination; remove m6g.large, or use an image built for arm64 (launches on it fail and the ladder moves on)',
    );
    expect(lines.find((l) => l.startsWith('runs/ic-missing.yaml'))).toMatch(
      /^runs\/ic-missing\.yaml:13:12 error spec\.resources\.image: AMI ami-0123456789abcdef0 does not exist in us-east-1 or is not shared with this account; AMI ids differ per region; use an AMI id that exists in us-east-1/,
    );
    for (const run of ['ic-good', 'ic-dlami-sized', 'ic-arch-some']) expect(out.stdout).toMatch(new RegExp(`\\+ create ${run}(\\s|$)`, 'm'));
    for (const run of ['ic-small-root', 'ic-dlami', 'ic-arch', 'ic-missing']) expect(out.stdout).not.toMatch(new RegExp(`create ${run}(\\s|$)`, 'm'));
    expect(lines.filter((l) => l.startsWith('runs/ic-good.yaml') || l.startsWith('runs/ic-dlami-sized.yaml'))).toEqual([]);
  });

  it('puts them in --format json with the field path', async () => {
    const out = await runctl('plan', '--format', 'json');
    expect(out.status, out.stderr).toBe(1);
    const diagnostics = (JSON.parse(out.stdout) as { diagnostics: Array<Record<string, unknown>> }).diagnostics;
    expect(diagnostics.filter((d) => d.file === 'runs/ic-small-root.yaml').map((d) => [d.path, d.severity, d.line])).toEqual([
      ['spec.resources.rootVolumeGiB', 'error', 14],
    ]);
    expect(diagnostics.filter((d) => d.file === 'runs/ic-dlami.yaml').map((d) => [d.path, d.severity, d.line])).toEqual([['spec.resources.image', 'error', 13]]);
  });
});
