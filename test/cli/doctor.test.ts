// `runctl doctor` through the real CLI and SDK against moto, with the fleet proxy answering what
// moto lacks (Service Quotas, the IAM policy simulator) and injecting AWS's own errors where a
// shared moto cannot hold the state (a denied write, a missing spot service-linked role). A healthy
// account exits 0 with every check passing and leaves no probe object behind; each broken piece
// exits 1 with its exact line: what is wrong and the fix.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { instancePolicy, instanceTrustPolicy } from '../../src/providers/aws/iam-policy.js';
import { startFleet, type Fleet } from '../support/fleet/index.js';
import { createBucket, freePort, motoQuery } from '../support/moto.js';
import { useMotoProject } from './support.js';

const RUNCTL = path.resolve('bin/runctl.js');
const BUCKET = 'runctl-doctor-ok';
const WEST = 'runctl-doctor-west';
const { moto, project } = useMotoProject({ prefix: 'runctl-doctor-', bucket: BUCKET });
let fleet: Fleet;

async function profileWithRole(name: string, policy?: object): Promise<void> {
  await motoQuery(moto.url, 'iam', { Action: 'CreateRole', RoleName: name, AssumeRolePolicyDocument: JSON.stringify(instanceTrustPolicy()) }).catch(ignoreExists);
  if (policy) await motoQuery(moto.url, 'iam', { Action: 'PutRolePolicy', RoleName: name, PolicyName: 'runctl', PolicyDocument: JSON.stringify(policy) });
  await motoQuery(moto.url, 'iam', { Action: 'CreateInstanceProfile', InstanceProfileName: name }).catch(ignoreExists);
  await motoQuery(moto.url, 'iam', { Action: 'AddRoleToInstanceProfile', InstanceProfileName: name, RoleName: name }).catch(ignoreExists);
}
function ignoreExists(err: unknown): void {
  if (!/EntityAlreadyExists|LimitExceeded|already/i.test(String(err))) throw err;
}

interface Spec {
  profile?: string;
  storage?: string;
  types?: string;
  market?: string;
  image?: string;
  root?: number;
  zones?: string;
  secret?: string;
}
function spec(name: string, s: Spec = {}): string {
  return [
    'apiVersion: runctl.dev/v1alpha1',
    'kind: TrainingRun',
    `metadata: {name: ${name}}`,
    'spec:',
    '  provider: aws',
    '  code: {path: ./code}',
    '  run: python3 train.py',
    `  secrets: {TOKEN: "ssm:${s.secret ?? '/dr/token'}"}`,
    '  resources:',
    '    region: us-east-1',
    `    instanceTypes: ${s.types ?? '[t3.micro]'}`,
    `    market: ${s.market ?? 'spot-then-on-demand'}`,
    `    image: ${s.image ?? 'ami-12c6146b'}`,
    `    rootVolumeGiB: ${s.root ?? 20}`,
    `    availabilityZones: ${s.zones ?? '[us-east-1a, us-east-1b]'}`,
    `    iamInstanceProfile: ${s.profile ?? 'dr-instance'}`,
    '  checkpoints:',
    `    storage: ${s.storage ?? `s3://${BUCKET}/runs`}`,
    '',
  ].join('\n');
}
function write(folder: string, name: string, s: Spec = {}): void {
  fs.mkdirSync(path.join(project.dir, 'runs', folder), { recursive: true });
  fs.writeFileSync(path.join(project.dir, 'runs', folder, `${name}.yaml`), spec(name, s));
}

/** The real CLI in a child process; asynchronous, because the fleet proxy lives in this process. */
function runctl(...args: string[]): Promise<{ status: number | null; stdout: string; stderr: string; lines: string[] }> {
  return runctlIn({}, ...args);
}
function runctlIn(opts: { cwd?: string; env?: Record<string, string> }, ...args: string[]): Promise<{ status: number | null; stdout: string; stderr: string; lines: string[] }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [RUNCTL, ...args], {
      cwd: opts.cwd ?? project.dir,
      env: {
        ...process.env,
        NO_COLOR: '1',
        AWS_ENDPOINT_URL: fleet.endpoint,
        AWS_ACCESS_KEY_ID: 'testing',
        AWS_SECRET_ACCESS_KEY: 'testing',
        AWS_REGION: 'us-east-1',
        AWS_EC2_METADATA_DISABLED: 'true',
        ...opts.env,
      },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stdout, stderr, lines: stdout.split('\n') }));
  });
}

beforeAll(async () => {
  fleet = await startFleet({ motoUrl: moto.url });
  await createBucket(moto.url, WEST, 'eu-west-1');
  const good = instancePolicy({ bucket: BUCKET, prefix: 'runs', secretParameters: '/dr/*' });
  await profileWithRole('dr-instance', good);
  // Storage on any bucket, for the cases about the bucket itself.
  await profileWithRole('dr-any-bucket', instancePolicy({ prefix: 'runs', secretParameters: '/dr/*' }));
  await profileWithRole('dr-no-s3', instancePolicy({ bucket: 'some-other-bucket', prefix: 'runs', secretParameters: '/dr/*' }));
  await profileWithRole('dr-no-ssm', { ...good, Statement: good.Statement.filter((s) => s.Sid !== 'SsmManagedInstance') });
  await profileWithRole('dr-no-secret', instancePolicy({ bucket: BUCKET, prefix: 'runs' }));
  // What CreateServiceLinkedRole makes on AWS (moto's names it AWSServiceRoleForspot).
  await motoQuery(moto.url, 'iam', {
    Action: 'CreateRole',
    RoleName: 'AWSServiceRoleForEC2Spot',
    Path: '/aws-service-role/spot.amazonaws.com/',
    AssumeRolePolicyDocument: JSON.stringify({ Version: '2012-10-17', Statement: [{ Effect: 'Allow', Principal: { Service: 'spot.amazonaws.com' }, Action: 'sts:AssumeRole' }] }),
  }).catch(ignoreExists);
  fleet.account.setQuota('L-1216C47A', 64);
  fleet.account.setQuota('L-34B43A08', 64);

  write('healthy', 'dr-ok');
  write('healthy', 'dr-ok-too', { types: '[t3.small, m5.large]' });
  write('bucket-missing', 'dr-bucket-missing', { storage: 's3://runctl-doctor-nope/runs', profile: 'dr-any-bucket' });
  write('bucket-west', 'dr-bucket-west', { storage: `s3://${WEST}/runs`, profile: 'dr-any-bucket' });
  write('probe', 'dr-probe');
  write('profile-missing', 'dr-profile-missing', { profile: 'dr-missing' });
  write('role-s3', 'dr-role-s3', { profile: 'dr-no-s3' });
  write('role-ssm', 'dr-role-ssm', { profile: 'dr-no-ssm' });
  write('role-secret', 'dr-role-secret', { profile: 'dr-no-secret' });
  write('image-missing', 'dr-image-missing', { image: 'ami-0123456789abcdef0' });
  write('arch', 'dr-arch', { types: '[m6g.large]' });
  write('root', 'dr-root', { root: 10 });
  write('zone', 'dr-zone', { zones: '[us-east-1a, us-east-1g]' });
  write('spot-role', 'dr-spot-role', { market: 'spot' });
  write('quota', 'dr-quota', { types: '[g5.xlarge]', market: 'on-demand' });
  write('image-param', 'dr-image-param', { image: '/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64' });
  write('quota-fallback', 'dr-quota-fallback', { types: '[g5.xlarge, t3.micro]', market: 'on-demand' });
}, 120_000);

afterAll(async () => {
  await fleet?.close();
});

async function objectsUnder(bucket: string, prefix: string): Promise<string[]> {
  const res = await fetch(`${moto.url}/${bucket}?list-type=2&prefix=${encodeURIComponent(prefix)}`, {
    headers: { authorization: 'AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0' },
  });
  return [...(await res.text()).matchAll(/<Key>([^<]+)<\/Key>/g)].map((m) => m[1]!);
}

/** The one line of a check in the text output, without AWS request ids (they differ per run). */
function lineOf(out: { lines: string[] }, status: string, check: string): string | undefined {
  return out.lines.find((l) => l.startsWith(`${status.padEnd(4)} ${check} `))?.replace(/ \(request id [^)]+\)/g, '');
}

describe('runctl doctor', () => {
  it('passes every check on a healthy account, exits 0 and leaves no probe object', async () => {
    const out = await runctl('doctor', 'runs/healthy');
    expect(out.status, out.stdout + out.stderr).toBe(0);
    expect(out.lines[0]).toBe('runctl doctor: 2 runs on aws in runs/healthy');
    const checks = out.lines.filter((l) => /^(pass|warn|fail) /.test(l));
    expect(checks.filter((l) => !l.startsWith('pass '))).toEqual([]);
    expect(checks.map((l) => l.split(' ')[1])).toEqual(
      expect.arrayContaining(['credentials', 'bucket', 'probe', 'instance-profile', 'role-ssm', 'role-storage', 'role-secrets', 'image', 'architecture', 'root-volume', 'subnets', 'quota', 'spot-role']),
    );
    expect(lineOf(out, 'pass', 'credentials')).toBe('pass credentials us-east-1: arn:aws:sts::123456789012:user/moto (account 123456789012)');
    expect(lineOf(out, 'pass', 'probe')).toBe(`pass probe s3://${BUCKET}/runs/: runctl can write, read back and delete objects under s3://${BUCKET}/runs/`);
    expect(lineOf(out, 'pass', 'role-storage')).toBe(`pass role-storage dr-instance → s3://${BUCKET}/runs/: role dr-instance can read, write, list and delete under s3://${BUCKET}/runs/`);
    expect(out.lines).toContain(
      'pass quota L-1216C47A Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances: 64 vCPUs in us-east-1; these runs need at most 4 at once',
    );
    expect(out.lines).toContain('pass root-volume ami-12c6146b: rootVolumeGiB 20 holds the image\'s 15 GiB root snapshot');
    expect(out.lines.at(-2)).toMatch(/^doctor: \d+ checks; \d+ pass, 0 warn, 0 fail$/);
    expect(await objectsUnder(BUCKET, 'runs/')).toEqual([]);
    // Two runs sharing a bucket, profile and zones share those checks: one line each.
    expect(out.lines.filter((l) => l.startsWith('pass probe ')).length).toBe(1);
  }, 120_000);

  it('-o json gives every check with its status, subject, message, fix and runs', async () => {
    const out = await runctl('doctor', 'runs/healthy', 'runs/quota', '-o', 'json');
    expect(out.status, out.stderr).toBe(1);
    const doc = JSON.parse(out.stdout) as { ok: boolean; runs: string[]; invalidFiles: string[]; summary: { pass: number; warn: number; fail: number }; checks: Array<Record<string, unknown>> };
    expect(doc.ok).toBe(false);
    expect(doc.runs.sort()).toEqual(['dr-ok', 'dr-ok-too', 'dr-quota']);
    expect(doc.invalidFiles).toEqual([]);
    expect(doc.summary.fail).toBe(1);
    expect(doc.summary.pass + doc.summary.warn + doc.summary.fail).toBe(doc.checks.length);
    for (const c of doc.checks) {
      expect(Object.keys(c).sort()).toEqual(c.status === 'pass' ? ['check', 'message', 'runs', 'status', 'subject'] : ['check', 'fix', 'message', 'runs', 'status', 'subject']);
    }
    expect(doc.checks.find((c) => c.status === 'fail')).toEqual({
      check: 'quota',
      subject: 'L-DB2E81BA Running On-Demand G and VT instances',
      status: 'fail',
      message: '0 vCPUs in us-east-1; g5.xlarge needs 4: dr-quota cannot start on any rung',
      fix: 'request at least 4 vCPUs: aws service-quotas request-service-quota-increase --service-code ec2 --quota-code L-DB2E81BA --desired-value 4 --region us-east-1',
      runs: ['dr-quota'],
    });
    expect(doc.checks.find((c) => c.check === 'credentials')).toMatchObject({ status: 'pass', runs: ['dr-ok', 'dr-ok-too', 'dr-quota'] });
  }, 120_000);

  const failures: Array<[string, string, string, () => (() => void) | void]> = [
    [
      'bucket-missing',
      'bucket',
      'fail bucket s3://runctl-doctor-nope/runs/: bucket runctl-doctor-nope does not exist — fix: aws s3api create-bucket --bucket runctl-doctor-nope --region us-east-1 (or fix the bucket name in spec.checkpoints.storage)',
      () => {},
    ],
    [
      'bucket-west',
      'bucket-region',
      `fail bucket-region s3://${WEST}/runs/: bucket ${WEST} is in eu-west-1 but the runs are in us-east-1: every status read, log segment and checkpoint would cross regions (slower, and billed per GiB) — fix: create a bucket in us-east-1 (aws s3api create-bucket --bucket <name> --region us-east-1) and point spec.checkpoints.storage (or defaults.storage in runctl.yaml) at it`,
      () => {},
    ],
    [
      'probe',
      'probe',
      `fail probe s3://${BUCKET}/runs/: runctl cannot put objects under s3://${BUCKET}/runs/: S3 PutObject in us-east-1 was denied (AccessDenied): the credentials runctl uses lack s3:PutObject; it may also need s3:PutObject on the storage prefix. Run \`runctl iam-policy\` for the policy the controller needs (AWS said: Access Denied) — fix: add to the controller's policy: {"Effect":"Allow","Action":"s3:PutObject","Resource":"arn:aws:s3:::${BUCKET}/runs/*"} (\`runctl iam-policy --only controller --bucket ${BUCKET} --prefix runs\` has it)`,
      () => fleet.injectFault({ kind: 'error', service: 's3', action: `PUT /${BUCKET}/runs/doctor-probe-*`, status: 403, code: 'AccessDenied', message: 'Access Denied' }),
    ],
    [
      'profile-missing',
      'instance-profile',
      'fail instance-profile dr-missing: instance profile dr-missing does not exist in account 123456789012 — fix: runctl iam-policy --only trust > trust.json && aws iam create-role --role-name dr-missing --assume-role-policy-document file://trust.json && aws iam create-instance-profile --instance-profile-name dr-missing && aws iam add-role-to-instance-profile --instance-profile-name dr-missing --role-name dr-missing, then give the role the instance policy (`runctl iam-policy --only instance`)',
      () => {},
    ],
    [
      'role-s3',
      'role-storage',
      `fail role-storage dr-no-s3 → s3://${BUCKET}/runs/: role dr-no-s3 lacks s3:GetObject, s3:PutObject, s3:DeleteObject, s3:ListBucket under s3://${BUCKET}/runs/: the agent cannot fetch its code or save status, logs and checkpoints — fix: add to role dr-no-s3: {"Effect":"Allow","Action":["s3:GetObject","s3:PutObject","s3:DeleteObject"],"Resource":"arn:aws:s3:::${BUCKET}/runs/*"} and {"Effect":"Allow","Action":"s3:ListBucket","Resource":"arn:aws:s3:::${BUCKET}","Condition":{"StringLike":{"s3:prefix":["runs/*","runs"]}}} (or \`runctl iam-policy --only instance --bucket ${BUCKET} --prefix runs\`)`,
      () => {},
    ],
    [
      'role-ssm',
      'role-ssm',
      'fail role-ssm dr-no-ssm: role dr-no-ssm lacks ssm:UpdateInstanceInformation, ssmmessages:CreateControlChannel, ssmmessages:CreateDataChannel, ssmmessages:OpenControlChannel, ssmmessages:OpenDataChannel, ec2messages:AcknowledgeMessage, ec2messages:DeleteMessage, ec2messages:FailMessage, ec2messages:GetEndpoint, ec2messages:GetMessages, ec2messages:SendReply: the instance never reports Online to SSM and the run fails at timeouts.provisioning — fix: aws iam attach-role-policy --role-name dr-no-ssm --policy-arn arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore',
      () => {},
    ],
    [
      'role-secret',
      'role-secrets',
      'fail role-secrets dr-no-secret → ssm:/dr/token: role dr-no-secret cannot read SSM parameter /dr/token (ssm:GetParameter): the run would fail with SecretUnresolved — fix: add to role dr-no-secret: {"Effect":"Allow","Action":"ssm:GetParameter","Resource":"arn:aws:ssm:us-east-1:123456789012:parameter/dr/token"} (a SecureString under a customer-managed KMS key also needs kms:Decrypt on that key)',
      () => {},
    ],
    [
      'image-missing',
      'image',
      'fail image ami-0123456789abcdef0: AMI ami-0123456789abcdef0 does not exist in us-east-1 or is not shared with this account; AMI ids differ per region — fix: use an AMI id that exists in us-east-1 (`aws ec2 describe-images --region us-east-1 --image-ids …`) or an SSM parameter path such as /aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64',
      () => {},
    ],
    [
      'arch',
      'architecture',
      'fail architecture m6g.large: m6g.large runs arm64 but image ami-12c6146b is x86_64; EC2 refuses this combination — fix: choose an instance type that runs x86_64, or an image built for arm64',
      () => {},
    ],
    [
      'root',
      'root-volume',
      'fail root-volume ami-12c6146b: image ami-12c6146b has a root snapshot of 15 GiB, larger than spec.resources.rootVolumeGiB (10 GiB); EC2 refuses the launch — fix: set spec.resources.rootVolumeGiB to at least 15',
      () => {},
    ],
    [
      'zone',
      'subnets',
      "fail subnets us-east-1a, us-east-1g: no default subnet in us-east-1g (there is one in us-east-1a): launches there fail — fix: aws ec2 create-default-subnet --region us-east-1 --availability-zone us-east-1g; or remove us-east-1g from spec.resources.availabilityZones, or set spec.resources.subnetId to one of `aws ec2 describe-subnets --region us-east-1 --query 'Subnets[].[SubnetId,AvailabilityZone]'`",
      () => {},
    ],
    [
      'spot-role',
      'spot-role',
      'fail spot-role AWSServiceRoleForEC2Spot: the spot service-linked role AWSServiceRoleForEC2Spot does not exist in account 123456789012: spot launches fail (AuthFailure.ServiceLinkedRoleCreationNotPermitted) unless the controller may create it — fix: aws iam create-service-linked-role --aws-service-name spot.amazonaws.com (once per account, by an administrator)',
      // The role exists in this shared moto; IAM answers as it does in an account without it.
      () => fleet.injectFault({ kind: 'error', service: 'iam', action: 'GetRole', status: 404, code: 'NoSuchEntity', message: 'The role with name AWSServiceRoleForEC2Spot cannot be found.' }),
    ],
    [
      'quota',
      'quota',
      'fail quota L-DB2E81BA Running On-Demand G and VT instances: 0 vCPUs in us-east-1; g5.xlarge needs 4: dr-quota cannot start on any rung — fix: request at least 4 vCPUs: aws service-quotas request-service-quota-increase --service-code ec2 --quota-code L-DB2E81BA --desired-value 4 --region us-east-1',
      () => {},
    ],
  ];
  for (const [folder, check, expected, arrange] of failures) {
    it(`fails ${check} (${folder}) with its message and fix, exit 1`, async () => {
      const undo = arrange();
      try {
        const out = await runctl('doctor', `runs/${folder}`);
        expect(out.status, out.stdout + out.stderr).toBe(1);
        expect(lineOf(out, 'fail', check)).toBe(expected);
        // That is the only failing line.
        expect(out.lines.filter((l) => l.startsWith('fail ')).map((l) => l.replace(/ \(request id [^)]+\)/g, '')), out.stdout).toEqual([expected]);
      } finally {
        if (typeof undo === 'function') undo();
      }
      expect(await objectsUnder(BUCKET, 'runs/')).toEqual([]);
    }, 120_000);
  }

  it('warns, and exits 0, when a quota rules out one rung but the ladder has another', async () => {
    const out = await runctl('doctor', 'runs/quota-fallback');
    expect(out.status, out.stdout + out.stderr).toBe(0);
    expect(out.lines.filter((l) => /^(warn|fail) /.test(l))).toEqual([
      'warn quota L-DB2E81BA Running On-Demand G and VT instances: 0 vCPUs in us-east-1; g5.xlarge needs 4: those rungs are never launched, the ladder moves on to the others — fix: request at least 4 vCPUs: aws service-quotas request-service-quota-increase --service-code ec2 --quota-code L-DB2E81BA --desired-value 4 --region us-east-1',
    ]);
  }, 120_000);

  it('exits 2 on a usage error', async () => {
    expect((await runctl('doctor', '-o', 'yaml')).status).toBe(2);
    const missing = await runctl('doctor', 'runs/nope');
    expect(missing.status).toBe(2);
    expect(missing.stderr).toContain('runctl: runs/nope: no such file or folder');
  }, 60_000);

  it('an unreachable endpoint fails credentials naming the network and the endpoint, not the credentials', async () => {
    // A loopback port nobody listens on: every call is refused, as behind a broken proxy or a stale AWS_ENDPOINT_URL.
    const closed = `http://127.0.0.1:${await freePort()}`;
    const out = await runctlIn({ env: { AWS_ENDPOINT_URL: closed } }, 'doctor', 'runs/healthy');
    expect(out.status, out.stdout + out.stderr).toBe(1);
    expect(out.lines.filter((l) => /^(pass|warn|fail) /.test(l))).toEqual([
      `fail credentials us-east-1: STS GetCallerIdentity in us-east-1 failed temporarily (ECONNREFUSED): connect ECONNREFUSED ${closed.slice('http://'.length)} (gave up after retrying); the other checks for us-east-1 were skipped — fix: AWS did not answer at ${closed}: check the endpoint (AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_<SERVICE>, --endpoint-url), a proxy (HTTPS_PROXY) and the network, then run \`runctl doctor\` again`,
    ]);
    expect(out.stderr).not.toMatch(/\n\s+at /);
  }, 120_000);

  it('without a runs/ folder and no PATH, says so and exits 2', async () => {
    const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'runctl-doctor-empty-'));
    try {
      const out = await runctlIn({ cwd: empty }, 'doctor');
      expect(out.status, out.stdout + out.stderr).toBe(2);
      expect(out.stdout).toBe('');
      expect(out.stderr).toContain(`runctl: no runs/ folder in ${fs.realpathSync(empty)}; name the spec files or folders to check`);
    } finally {
      fs.rmSync(empty, { recursive: true, force: true });
    }
  }, 60_000);

  it('an image parameter the caller may not read: the warning names ssm:GetParameter on that parameter, not ec2:DescribeImages', async () => {
    const undo = fleet.injectFault({ kind: 'error', service: 'ssm', action: 'GetParameter', status: 400, code: 'AccessDeniedException', message: 'User: arn:aws:iam::123456789012:user/moto is not authorized to perform: ssm:GetParameter' });
    try {
      const out = await runctl('doctor', 'runs/image-param');
      expect(out.status, out.stdout + out.stderr).toBe(0);
      const warn = out.lines.filter((l) => l.startsWith('warn ')).map((l) => l.replace(/ \(request id [^)]+\)/g, ''));
      expect(warn).toHaveLength(1);
      expect(warn[0]).toMatch(/^warn image \/aws\/service\/ami-amazon-linux-latest\/al2023-ami-kernel-default-x86_64: could not check: .*AccessDeniedException/);
      expect(warn[0]).toContain(
        ' — fix: allow ssm:GetParameter on arn:aws:ssm:us-east-1::parameter/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64 to whoever runs doctor (`runctl iam-policy --only controller` includes it)',
      );
    } finally {
      undo();
    }
  }, 120_000);

  it('an AWS read that keeps failing with 5xx says doctor gave up after retrying, and does not promise a retry', async () => {
    const undo = fleet.injectFault({ kind: 'error', service: 'ec2', action: 'DescribeImages', status: 503, code: 'Unavailable', message: 'The service is unavailable. Please try again shortly.' });
    try {
      const out = await runctl('doctor', 'runs/image-missing');
      expect(out.status, out.stdout + out.stderr).toBe(1);
      const fail = out.lines.filter((l) => l.startsWith('fail ')).map((l) => l.replace(/ \(request id [^)]+\)/g, ''));
      expect(fail).toEqual([
        'fail image ami-0123456789abcdef0: could not check: EC2 DescribeImages in us-east-1 failed temporarily (Unavailable): The service is unavailable. Please try again shortly. (gave up after retrying) — fix: check the credentials, the region and the network, then run `runctl doctor` again',
      ]);
      expect(out.stdout).not.toContain('runctl will retry');
    } finally {
      undo();
    }
  }, 120_000);
});
