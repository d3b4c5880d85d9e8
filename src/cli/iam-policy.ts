// `runctl iam-policy`: print the least-privilege IAM policies runctl needs on AWS, as JSON.
import type { Command } from 'commander';
import { UsageError } from './errors.js';

interface Options {
  bucket?: string;
  prefix?: string;
  controller?: string;
  instanceRole?: string;
  secretParameters?: string;
  state?: string;
  ebsKmsKey?: string;
  bucketKmsKey?: string;
  only?: string;
}

const PARTS = ['controller', 'instance', 'trust'] as const;

export function register(program: Command): void {
  program
    .command('iam-policy')
    .description('Print least-privilege IAM policies for the controller and the instance profile (JSON)')
    .option('--bucket <name>', 'bucket of checkpoints.storage (default "*": narrow it before use)')
    .option('--prefix <prefix>', 'key prefix within the bucket, e.g. runctl')
    .option('--controller <name>', 'only instances tagged runctl:controller=<name> may be terminated or commanded')
    .option('--instance-role <name>', 'IAM role behind the instance profile, passed to EC2: a name, or /path/name for a role with a path', 'runctl-instance')
    .option('--secret-parameters <path>', 'SSM parameter path the instance may read secrets from, e.g. /team/runctl/*')
    .option('--state <url>', 'shared state store s3://bucket/prefix (runctl.yaml state:) the controller reads and writes')
    .option('--ebs-kms-key <arn>', "customer-managed KMS key of the account's EBS default encryption (the controller's launches use it through EC2)")
    .option('--bucket-kms-key <arn>', 'KMS key of an SSE-KMS bucket (the controller and the instance use it through S3)')
    .option('--only <part>', `print one document only: ${PARTS.join(', ')}`)
    .action(async (opts: Options) => {
      const { controllerPolicy, instancePolicy, instanceTrustPolicy, PolicyInputError } = await import(
        '../providers/aws/iam-policy.js'
      );
      if (opts.only !== undefined && !(PARTS as readonly string[]).includes(opts.only)) {
        throw new UsageError(`--only must be one of ${PARTS.join(', ')} (got "${opts.only}")`);
      }
      let docs: Record<string, unknown>;
      try {
        docs = {
          controller: controllerPolicy(opts),
          instance: instancePolicy(opts),
          trust: instanceTrustPolicy(),
        };
      } catch (err) {
        if (err instanceof PolicyInputError) throw new UsageError(err.message);
        throw err;
      }
      const out = opts.only ? docs[opts.only] : docs;
      process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
    });
}
