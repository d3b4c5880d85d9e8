// The image of a spec checked against what EC2 will do with it, before anything is launched: the
// image exists in the run's region, its architecture matches each instance type, and its root
// snapshot fits spec.resources.rootVolumeGiB (EC2 refuses a root volume smaller than the image's
// snapshot, and the Deep Learning AMIs' snapshots are larger than some defaults: issue 11 fault 7).
// One function, used by `plan`/`apply` (provider preflight) and by `runctl doctor`. Read-only.
import type { Segment } from '../../spec/field-path.js';
import type { ResourcesSpec } from '../../spec/types.js';
import { TerminalError, type PreflightProblem } from '../types.js';
import type { AwsClients } from './clients.js';
import type { ImageResolver, ResolvedImage } from './image.js';
import { describeInstanceTypes, type InstanceTypeFacts } from './instance-types.js';

export interface ImageFinding extends PreflightProblem {
  /** What was checked: the image itself, one instance type's architecture, the root volume size. */
  check: 'image' | 'architecture' | 'root-volume';
  /** The problem alone, without the fix. */
  problem: string;
  /** What to change, as an instruction. */
  fix: string;
}

export interface ImageCheckResult {
  /** The image, when it resolved. */
  image?: ResolvedImage;
  /** Facts of the spec's instance types that exist in the region. */
  instanceTypes: Map<string, InstanceTypeFacts>;
  findings: ImageFinding[];
}

const IMAGE: Segment[] = ['spec', 'resources', 'image'];
const ROOT: Segment[] = ['spec', 'resources', 'rootVolumeGiB'];
/** Resolver errors that mean "this image is not there" (the others: permissions, network, are thrown). */
const MISSING = new Set(['InvalidAMIID.NotFound', 'ParameterNotFound', 'InvalidImage']);

/**
 * Checks `resources.image` in the clients' region. Findings are errors unless the ladder still has
 * a usable rung (an architecture mismatch on some types only is a warning). `types` may be passed
 * when the caller already has them (doctor does). Throws the provider's classified errors when EC2
 * or SSM cannot be asked (credentials, permissions, network).
 */
export async function checkImage(
  clients: AwsClients,
  resources: ResourcesSpec,
  images: ImageResolver,
  types?: Map<string, InstanceTypeFacts>,
): Promise<ImageCheckResult> {
  const findings: ImageFinding[] = [];
  let image: ResolvedImage;
  try {
    image = await images.resolve(clients, resources.image);
  } catch (err) {
    if (!(err instanceof TerminalError) || !MISSING.has(err.code ?? '')) throw err;
    const problem = err.message.replace(/^spec\.resources\.image:?\s*/, '');
    const fix = `use an AMI id that exists in ${clients.region} (\`aws ec2 describe-images --region ${clients.region} --image-ids …\`) or an SSM parameter path such as /aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64`;
    findings.push(finding('image', IMAGE, 'error', problem, fix));
    return { instanceTypes: types ?? new Map(), findings };
  }
  const named = `image ${image.imageId}${image.from ? ` (from ${image.from})` : ''}`;

  const facts = types ?? (image.architecture ? await describeInstanceTypes(clients, resources.instanceTypes) : new Map<string, InstanceTypeFacts>());
  if (image.architecture) {
    const arch = image.architecture;
    const mismatched = resources.instanceTypes
      .map((type, i) => ({ type, i, facts: facts.get(type) }))
      .filter((t) => t.facts && t.facts.architectures.length > 0 && !t.facts.architectures.includes(arch));
    const usable = resources.instanceTypes.some((t) => !mismatched.some((m) => m.type === t));
    for (const m of mismatched) {
      const runs = m.facts!.architectures.join(' or ');
      findings.push(
        finding(
          'architecture',
          ['spec', 'resources', 'instanceTypes', m.i],
          usable ? 'warning' : 'error',
          `${m.type} runs ${runs} but ${named} is ${arch}; EC2 refuses this combination`,
          usable
            ? `remove ${m.type}, or use an image built for ${runs} (launches on it fail and the ladder moves on)`
            : `choose an instance type that runs ${arch}, or an image built for ${runs}`,
        ),
      );
    }
  }

  if (image.rootSnapshotGiB !== undefined && image.rootSnapshotGiB > resources.rootVolumeGiB) {
    findings.push({
      ...finding(
        'root-volume',
        ROOT,
        'error',
        `${named} has a root snapshot of ${image.rootSnapshotGiB} GiB, larger than spec.resources.rootVolumeGiB (${resources.rootVolumeGiB} GiB); EC2 refuses the launch`,
        `set spec.resources.rootVolumeGiB to at least ${image.rootSnapshotGiB}`,
      ),
      orAt: IMAGE,
    });
  }
  return { image, instanceTypes: facts, findings };
}

function finding(check: ImageFinding['check'], path: Segment[], severity: ImageFinding['severity'], problem: string, fix: string): ImageFinding {
  return { check, path, severity, problem, fix, message: `${problem}; ${fix}` };
}
