// The instance profile behind spec.resources.iamInstanceProfile exists and has a role, and that
// role allows what the agent does on the instance: register with SSM and take Run Command (the
// actions of AmazonSSMManagedInstanceCore), read, write, list and delete under the storage prefix,
// read each secret's SSM parameter. Checked with the IAM policy simulator
// (SimulatePrincipalPolicy), which also applies permissions boundaries, so nothing is launched.
// Also: the spot service-linked role that spot launches need (EC2 User Guide, "Service-linked role
// for Spot Instance requests").
import { GetInstanceProfileCommand, GetRoleCommand, SimulatePrincipalPolicyCommand, type ContextEntry } from '@aws-sdk/client-iam';
import type { DoctorCheck } from '../../types.js';
import { awsCall } from '../errors.js';
import { SSM_CORE_ACTIONS } from '../iam-policy.js';
import type { StorageLocation } from '../storage.js';
import type { DoctorClients } from './clients.js';
import { codeOf, line, unable } from './result.js';

export interface ProfileRole {
  /** Role ARN, e.g. arn:aws:iam::123456789012:role/team/runctl-instance. */
  arn: string;
  name: string;
}

/** The profile's name from a name or an instance-profile ARN (whose path is not part of the name). */
export function profileName(profile: string): string {
  return profile.startsWith('arn:') ? (profile.split('/').pop() ?? profile) : profile;
}

/** `instance-profile` check; the role when there is one. */
export async function checkInstanceProfile(
  clients: DoctorClients,
  profile: string,
  account: string,
  runs: string[],
): Promise<{ check: DoctorCheck; role?: ProfileRole }> {
  const name = profileName(profile);
  try {
    const out = await awsCall({ service: 'iam', operation: 'GetInstanceProfile', region: clients.region }, () =>
      clients.iam.send(new GetInstanceProfileCommand({ InstanceProfileName: name })),
    );
    const role = out.InstanceProfile?.Roles?.[0];
    if (!role?.Arn || !role.RoleName) {
      return {
        check: line(
          'instance-profile',
          name,
          runs,
          'fail',
          `instance profile ${name} has no role: the instance gets no credentials, never registers with SSM and cannot reach its storage`,
          `aws iam add-role-to-instance-profile --instance-profile-name ${name} --role-name <role> (docs/aws.md, "What you need in the account")`,
        ),
      };
    }
    return {
      check: line('instance-profile', name, runs, 'pass', `instance profile ${name} has role ${role.Arn}`),
      role: { arn: role.Arn, name: role.RoleName },
    };
  } catch (err) {
    if (codeOf(err) === 'NoSuchEntity') {
      return {
        check: line(
          'instance-profile',
          name,
          runs,
          'fail',
          `instance profile ${name} does not exist in account ${account}`,
          `runctl iam-policy --only trust > trust.json && aws iam create-role --role-name ${name} --assume-role-policy-document file://trust.json && ` +
            `aws iam create-instance-profile --instance-profile-name ${name} && aws iam add-role-to-instance-profile --instance-profile-name ${name} --role-name ${name}` +
            ', then give the role the instance policy (`runctl iam-policy --only instance`)',
        ),
      };
    }
    return { check: unable('instance-profile', name, runs, err, 'iam:GetInstanceProfile', `arn:aws:iam::${account}:instance-profile/${name}`) };
  }
}

interface Question {
  actions: string[];
  resource: string;
  context?: ContextEntry[];
}

/** Actions of `q` the role is not allowed (simulator decision other than "allowed"). */
async function denied(clients: DoctorClients, role: ProfileRole, q: Question): Promise<string[]> {
  const out = await awsCall({ service: 'iam', operation: 'SimulatePrincipalPolicy', region: clients.region }, () =>
    clients.iam.send(
      new SimulatePrincipalPolicyCommand({
        PolicySourceArn: role.arn,
        ActionNames: q.actions,
        ResourceArns: [q.resource],
        ...(q.context ? { ContextEntries: q.context } : {}),
      }),
    ),
  );
  const allowed = new Set(
    (out.EvaluationResults ?? [])
      .filter((r) => r.EvalDecision === 'allowed' && (r.ResourceSpecificResults ?? []).every((s) => s.EvalResourceDecision === 'allowed'))
      .map((r) => r.EvalActionName?.toLowerCase()),
  );
  return q.actions.filter((a) => !allowed.has(a.toLowerCase()));
}

export interface RoleNeeds {
  storages: Array<{ location: StorageLocation; runs: string[] }>;
  /** SSM parameter names (with leading /) of `ssm:` secrets, with the runs that use them. */
  parameters: Array<{ name: string; runs: string[] }>;
}

/** `role-ssm`, `role-storage` and `role-secrets` checks for the role behind a profile. */
export async function checkRole(clients: DoctorClients, role: ProfileRole, account: string, needs: RoleNeeds, runs: string[]): Promise<DoctorCheck[]> {
  const out: DoctorCheck[] = [];
  const ask = async (check: string, subject: string, who: string[], q: Question, ok: string, bad: (missing: string[]) => [string, string]) => {
    try {
      const missing = await denied(clients, role, q);
      if (missing.length === 0) out.push(line(check, subject, who, 'pass', ok));
      else out.push(line(check, subject, who, 'fail', ...bad(missing)));
    } catch (err) {
      out.push(unable(check, subject, who, err, 'iam:SimulatePrincipalPolicy', role.arn));
    }
  };
  const statement = (actions: string[], resource: string) => JSON.stringify({ Effect: 'Allow', Action: actions.length === 1 ? actions[0] : actions, Resource: resource });

  await ask(
    'role-ssm',
    role.name,
    runs,
    { actions: SSM_CORE_ACTIONS, resource: '*' },
    `role ${role.name} allows SSM Run Command (the actions of AmazonSSMManagedInstanceCore)`,
    (missing) => [
      `role ${role.name} lacks ${missing.join(', ')}: the instance never reports Online to SSM and the run fails at timeouts.provisioning`,
      `aws iam attach-role-policy --role-name ${role.name} --policy-arn arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore`,
    ],
  );

  for (const { location, runs: who } of needs.storages) {
    const { bucket, prefix } = location;
    const url = `s3://${bucket}/${prefix}`;
    const objects = `arn:aws:s3:::${bucket}/${prefix}*`;
    const missing: string[] = [];
    let failedCheck: DoctorCheck | undefined;
    try {
      missing.push(...(await denied(clients, role, { actions: ['s3:GetObject', 's3:PutObject', 's3:DeleteObject'], resource: `arn:aws:s3:::${bucket}/${prefix}runctl-doctor` })));
      const list = prefix
        ? [{ ContextKeyName: 's3:prefix', ContextKeyValues: [prefix], ContextKeyType: 'string' as const }]
        : undefined;
      missing.push(...(await denied(clients, role, { actions: ['s3:ListBucket'], resource: `arn:aws:s3:::${bucket}`, ...(list ? { context: list } : {}) })));
    } catch (err) {
      failedCheck = unable('role-storage', `${role.name} → ${url}`, who, err, 'iam:SimulatePrincipalPolicy', role.arn);
    }
    if (failedCheck) out.push(failedCheck);
    else if (missing.length === 0) out.push(line('role-storage', `${role.name} → ${url}`, who, 'pass', `role ${role.name} can read, write, list and delete under ${url}`));
    else {
      const objectActions = missing.filter((a) => a !== 's3:ListBucket');
      const fixes = [
        ...(objectActions.length ? [statement(objectActions, objects)] : []),
        ...(missing.includes('s3:ListBucket') ? [JSON.stringify({ Effect: 'Allow', Action: 's3:ListBucket', Resource: `arn:aws:s3:::${bucket}`, ...(prefix ? { Condition: { StringLike: { 's3:prefix': [`${prefix}*`, prefix.replace(/\/$/, '')] } } } : {}) })] : []),
      ];
      out.push(
        line(
          'role-storage',
          `${role.name} → ${url}`,
          who,
          'fail',
          `role ${role.name} lacks ${missing.join(', ')} under ${url}: the agent cannot fetch its code or save status, logs and checkpoints`,
          `add to role ${role.name}: ${fixes.join(' and ')} (or \`runctl iam-policy --only instance --bucket ${bucket}${prefix ? ` --prefix ${prefix.replace(/\/$/, '')}` : ''}\`)`,
        ),
      );
    }
  }

  for (const { name, runs: who } of needs.parameters) {
    const arn = `arn:aws:ssm:${clients.region}:${account}:parameter${name}`;
    await ask(
      'role-secrets',
      `${role.name} → ssm:${name}`,
      who,
      { actions: ['ssm:GetParameter'], resource: arn },
      `role ${role.name} can read SSM parameter ${name}`,
      () => [
        `role ${role.name} cannot read SSM parameter ${name} (ssm:GetParameter): the run would fail with SecretUnresolved`,
        `add to role ${role.name}: ${statement(['ssm:GetParameter'], arn)} (a SecureString under a customer-managed KMS key also needs kms:Decrypt on that key)`,
      ],
    );
  }
  return out;
}

const SPOT_ROLE = 'AWSServiceRoleForEC2Spot';

/** `spot-role` check: the service-linked role spot requests need exists in the account. */
export async function checkSpotRole(clients: DoctorClients, account: string, runs: string[]): Promise<DoctorCheck> {
  try {
    await awsCall({ service: 'iam', operation: 'GetRole', region: clients.region }, () => clients.iam.send(new GetRoleCommand({ RoleName: SPOT_ROLE })));
    return line('spot-role', SPOT_ROLE, runs, 'pass', `the spot service-linked role ${SPOT_ROLE} exists`);
  } catch (err) {
    if (codeOf(err) === 'NoSuchEntity') {
      return line(
        'spot-role',
        SPOT_ROLE,
        runs,
        'fail',
        `the spot service-linked role ${SPOT_ROLE} does not exist in account ${account}: spot launches fail (AuthFailure.ServiceLinkedRoleCreationNotPermitted) unless the controller may create it`,
        'aws iam create-service-linked-role --aws-service-name spot.amazonaws.com (once per account, by an administrator)',
      );
    }
    return unable('spot-role', SPOT_ROLE, runs, err, 'iam:GetRole', `arn:aws:iam::${account}:role/aws-service-role/spot.amazonaws.com/${SPOT_ROLE}`);
  }
}
