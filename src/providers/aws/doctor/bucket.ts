// Storage checks: the bucket of checkpoints.storage exists, is in the runs' region (else every
// status read, log segment and checkpoint crosses regions: slower, and billed per GiB), and runctl
// can write, read back and delete an object under the prefix. The probe object is the only thing
// doctor ever writes, and it deletes it.
import { randomBytes } from 'node:crypto';
import { DeleteObjectCommand, GetBucketLocationCommand, GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import type { DoctorCheck } from '../../types.js';
import type { AwsClients } from '../clients.js';
import { awsCall } from '../errors.js';
import { gaveUpOn } from '../offerings.js';
import type { StorageLocation } from '../storage.js';
import { codeOf, isDenied, line, unable } from './result.js';

/** GetBucketLocation's LocationConstraint as a region: empty is us-east-1, `EU` the old name of eu-west-1. */
export function bucketRegion(constraint: string | undefined): string {
  if (!constraint) return 'us-east-1';
  return constraint === 'EU' ? 'eu-west-1' : constraint;
}

function createBucketCommand(bucket: string, region: string): string {
  return `aws s3api create-bucket --bucket ${bucket} --region ${region}${region === 'us-east-1' ? '' : ` --create-bucket-configuration LocationConstraint=${region}`}`;
}

/** Checks `bucket`, `bucket-region` and `probe` for one storage location used by runs in `region`. */
export async function checkStorage(clients: AwsClients, location: StorageLocation, region: string, runs: string[]): Promise<DoctorCheck[]> {
  const { bucket, prefix } = location;
  const url = `s3://${bucket}/${prefix}`;
  const out: DoctorCheck[] = [];
  const ctx = (operation: string) => ({ service: 's3' as const, operation, region });
  try {
    const got = await awsCall(ctx('GetBucketLocation'), () => clients.s3.send(new GetBucketLocationCommand({ Bucket: bucket })));
    const where = bucketRegion(got.LocationConstraint);
    out.push(line('bucket', url, runs, 'pass', `bucket ${bucket} exists, in ${where}`));
    if (where !== region) {
      out.push(
        line(
          'bucket-region',
          url,
          runs,
          'fail',
          `bucket ${bucket} is in ${where} but the runs are in ${region}: every status read, log segment and checkpoint would cross regions (slower, and billed per GiB)`,
          `create a bucket in ${region} (${createBucketCommand('<name>', region)}) and point spec.checkpoints.storage (or defaults.storage in runctl.yaml) at it`,
        ),
      );
    }
  } catch (err) {
    if (codeOf(err) === 'NoSuchBucket') {
      out.push(line('bucket', url, runs, 'fail', `bucket ${bucket} does not exist`, `${createBucketCommand(bucket, region)} (or fix the bucket name in spec.checkpoints.storage)`));
      return out;
    }
    out.push(unable('bucket', url, runs, err, 's3:GetBucketLocation', `arn:aws:s3:::${bucket}`));
    if (!isDenied(err)) return out;
  }
  out.push(await probe(clients, location, region, runs));
  return out;
}

/** Write, read back and delete one small object under the prefix. */
async function probe(clients: AwsClients, { bucket, prefix }: StorageLocation, region: string, runs: string[]): Promise<DoctorCheck> {
  const key = `${prefix}doctor-probe-${randomBytes(6).toString('hex')}`;
  const url = `s3://${bucket}/${prefix}`;
  const body = `runctl doctor probe ${new Date().toISOString()}\n`;
  const ctx = (operation: string) => ({ service: 's3' as const, operation, region });
  const statement = (action: string) =>
    `add to the controller's policy: {"Effect":"Allow","Action":"${action}","Resource":"arn:aws:s3:::${bucket}/${prefix}*"} ` +
    `(\`runctl iam-policy --only controller --bucket ${bucket}${prefix ? ` --prefix ${prefix.replace(/\/$/, '')}` : ''}\` has it)`;
  const step = async (action: string, operation: string, call: () => Promise<unknown>): Promise<DoctorCheck | undefined> => {
    try {
      await awsCall(ctx(operation), call);
      return undefined;
    } catch (err) {
      const settled = gaveUpOn(err);
      const message = settled instanceof Error ? settled.message : String(settled);
      return isDenied(err)
        ? line('probe', url, runs, 'fail', `runctl cannot ${action.replace('s3:', '').replace('Object', '').toLowerCase()} objects under ${url}: ${message}`, statement(action))
        : line('probe', url, runs, 'fail', `the probe object s3://${bucket}/${key} could not be handled: ${message}`, 'check the network and the credentials, then run `runctl doctor` again');
    }
  };
  const put = await step('s3:PutObject', 'PutObject', () => clients.s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body, ContentType: 'text/plain' })));
  if (put) return put;
  let readBack: string | undefined;
  const get = await step('s3:GetObject', 'GetObject', async () => {
    const out = await clients.s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    readBack = await out.Body?.transformToString();
  });
  const del = await step('s3:DeleteObject', 'DeleteObject', () => clients.s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: key })));
  if (del) {
    return { ...del, message: `${del.message}; the probe object s3://${bucket}/${key} is left behind`, fix: `${del.fix}; then delete it: aws s3 rm s3://${bucket}/${key}` };
  }
  if (get) return get;
  if (readBack !== body) {
    return line('probe', url, runs, 'fail', `the probe object read back from ${url} differs from what was written`, 'check for a proxy or an S3-compatible store that rewrites objects');
  }
  return line('probe', url, runs, 'pass', `runctl can write, read back and delete objects under ${url}`);
}
