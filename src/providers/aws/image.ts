// spec.resources.image is an AMI id or an SSM parameter path that holds one (AWS publishes the
// current Amazon Linux and Deep Learning AMIs that way). The AMI's root device name is needed so
// the encrypted gp3 root volume replaces the image's root instead of being added as a second disk.
import { DescribeImagesCommand } from '@aws-sdk/client-ec2';
import { GetParameterCommand } from '@aws-sdk/client-ssm';
import { TerminalError } from '../types.js';
import type { AwsClients } from './clients.js';
import { awsCall, errorCode } from './errors.js';

export interface ResolvedImage {
  imageId: string;
  rootDeviceName: string;
  /** The spec's value when it was an SSM parameter path, for messages. */
  from?: string;
  /** EC2 architecture of the image: `x86_64`, `arm64`, `i386`, `x86_64_mac`, `arm64_mac`. */
  architecture?: string;
  /**
   * Size in GiB of the snapshot behind the image's root device (BlockDeviceMappings entry whose
   * DeviceName is RootDeviceName). EC2 refuses a root volume smaller than it
   * (InvalidBlockDeviceMapping, "Volume of size N is smaller than snapshot"), issue 11 fault 7.
   */
  rootSnapshotGiB?: number;
}

const AMI_ID = /^ami-[0-9a-f]{8,17}$/;
const CACHE_MS = 60 * 60 * 1000;

export class ImageResolver {
  private readonly cache = new Map<string, { at: number; image: ResolvedImage }>();

  async resolve(clients: AwsClients, image: string | undefined): Promise<ResolvedImage> {
    if (!image) {
      throw new TerminalError(
        'spec.resources.image is required for the aws provider: an AMI id (ami-…) or an SSM parameter path such as ' +
          '/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64 (the image needs python3 and the AWS CLI)',
        { code: 'MissingImage' },
      );
    }
    const cacheKey = `${clients.region}\u0000${image}`;
    const hit = this.cache.get(cacheKey);
    if (hit && Date.now() - hit.at < CACHE_MS) return hit.image;
    const imageId = AMI_ID.test(image) ? image : await this.fromParameter(clients, image);
    const resolved = await this.describe(clients, imageId, image);
    this.cache.set(cacheKey, { at: Date.now(), image: resolved });
    return resolved;
  }

  private async fromParameter(clients: AwsClients, image: string): Promise<string> {
    const name = image.replace(/^resolve:ssm:/, '');
    if (!name.startsWith('/')) {
      throw new TerminalError(
        `spec.resources.image "${image}" is neither an AMI id (ami- followed by 8 or 17 hex digits) nor an SSM parameter path starting with /`,
        { code: 'InvalidImage' },
      );
    }
    try {
      const out = await awsCall({ service: 'ssm', operation: 'GetParameter', region: clients.region }, () =>
        clients.ssm.send(new GetParameterCommand({ Name: name })),
      );
      const value = out.Parameter?.Value ?? '';
      if (!AMI_ID.test(value)) {
        throw new TerminalError(`SSM parameter ${name} holds "${value}", which is not an AMI id`, { code: 'InvalidImage' });
      }
      return value;
    } catch (err) {
      if (errorCode((err as { cause?: unknown }).cause) === 'ParameterNotFound') {
        throw new TerminalError(
          `spec.resources.image: SSM parameter ${name} does not exist in ${clients.region}; check the path and the region`,
          { code: 'ParameterNotFound' },
        );
      }
      throw err;
    }
  }

  private async describe(clients: AwsClients, imageId: string, asWritten: string): Promise<ResolvedImage> {
    const notFound = () =>
      new TerminalError(
        `spec.resources.image: AMI ${imageId}${asWritten !== imageId ? ` (from ${asWritten})` : ''} does not exist in ` +
          `${clients.region} or is not shared with this account; AMI ids differ per region`,
        { code: 'InvalidAMIID.NotFound' },
      );
    try {
      const out = await awsCall({ service: 'ec2', operation: 'DescribeImages', region: clients.region }, () =>
        clients.ec2.send(new DescribeImagesCommand({ ImageIds: [imageId] })),
      );
      const found = out.Images?.find((i) => i.ImageId === imageId);
      if (!found) throw notFound();
      const rootDeviceName = found.RootDeviceName ?? '/dev/xvda';
      const root = found.BlockDeviceMappings?.find((m) => m.DeviceName === rootDeviceName);
      return {
        imageId,
        rootDeviceName,
        ...(asWritten !== imageId ? { from: asWritten } : {}),
        ...(found.Architecture ? { architecture: found.Architecture } : {}),
        ...(root?.Ebs?.VolumeSize !== undefined ? { rootSnapshotGiB: root.Ebs.VolumeSize } : {}),
      };
    } catch (err) {
      const code = errorCode((err as { cause?: unknown }).cause);
      if (code === 'InvalidAMIID.NotFound' || code === 'InvalidAMIID.Malformed') throw notFound();
      throw err;
    }
  }
}
