// What moto lacks for `runctl doctor` and plan's image check, answered with AWS's own response
// shapes (test support, not a product feature):
// - Service Quotas for EC2 (moto knows only VPC's): GetServiceQuota answers the applied values a
//   test sets, and NoSuchResourceException for the others, as AWS does for a quota never changed;
//   GetAWSDefaultServiceQuota answers AWS's documented defaults (5 vCPUs Standard, 0 the rest);
// - IAM SimulatePrincipalPolicy (HTTP 500 in moto): evaluates the role's inline and attached
//   customer-managed policies as stored in moto: explicit Deny, then Allow, else implicitDeny;
//   Action/NotAction and Resource/NotResource wildcards; String*/Arn*/Null conditions against the
//   context entries given (a key not given is reported in MissingContextValues);
// - root snapshot sizes (moto gives every AMI 15 GiB): DescribeImages patched per image.
import { motoQuery } from '../moto.js';
import { errorResponse, jsonResponse, listParam, requestId, xmlEscape, type AwsRequest, type WireError } from './aws-wire.js';

const ACCOUNT = '123456789012';

/** AWS's EC2 vCPU quotas (names and codes as Service Quotas shows them). */
const EC2_QUOTAS: Record<string, string> = {
  'L-1216C47A': 'Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances',
  'L-DB2E81BA': 'Running On-Demand G and VT instances',
  'L-417A185B': 'Running On-Demand P instances',
  'L-74FC7D96': 'Running On-Demand F instances',
  'L-1945791B': 'Running On-Demand Inf instances',
  'L-2C3B7624': 'Running On-Demand Trn instances',
  'L-6E869C2A': 'Running On-Demand DL instances',
  'L-7295265B': 'Running On-Demand X instances',
  'L-43DA4232': 'Running On-Demand High Memory instances',
  'L-F7808C92': 'Running On-Demand HPC instances',
  'L-34B43A08': 'All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests',
  'L-3819A6DF': 'All G and VT Spot Instance Requests',
  'L-7212CCBC': 'All P4, P3 and P2 Spot Instance Requests',
  'L-C4BD4855': 'All P5 Spot Instance Requests',
  'L-88CF9481': 'All F Spot Instance Requests',
  'L-B5D1601B': 'All Inf Spot Instance Requests',
  'L-6B0D517C': 'All Trn Spot Instance Requests',
  'L-85EED4F7': 'All DL Spot Instance Requests',
  'L-E3A00192': 'All X Spot Instance Requests',
};
const DEFAULTS: Record<string, number> = { 'L-1216C47A': 5, 'L-34B43A08': 5 };

type Condition = Record<string, Record<string, string | string[]>>;
interface PolicyStatement {
  Effect: 'Allow' | 'Deny';
  Action?: string | string[];
  NotAction?: string | string[];
  Resource?: string | string[];
  NotResource?: string | string[];
  Condition?: Condition;
}

const list = (v: string | string[] | undefined): string[] => (v === undefined ? [] : Array.isArray(v) ? v : [v]);
function glob(pattern: string, value: string, caseInsensitive = false): boolean {
  const re = pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${re}$`, caseInsensitive ? 'i' : '').test(value);
}

export class AccountModel {
  /** Applied quota values by `${region}/${code}`; codes not set answer NoSuchResourceException. */
  readonly appliedQuotas = new Map<string, number>();
  /** Root snapshot size (GiB) to report per AMI id. */
  readonly imageRootGiB = new Map<string, number>();

  constructor(private readonly motoUrl: string) {}

  setQuota(code: string, value: number, region = 'us-east-1'): void {
    this.appliedQuotas.set(`${region}/${code}`, value);
  }

  /** The answer for a request moto cannot give, or undefined to forward it. */
  async answer(aws: AwsRequest): Promise<WireError | undefined> {
    if (aws.service === 'servicequotas') return this.quota(aws);
    if (aws.service === 'iam' && aws.action === 'SimulatePrincipalPolicy') return this.simulate(aws);
    return undefined;
  }

  private quota(aws: AwsRequest): WireError {
    const json = aws.json ?? {};
    const service = String(json.ServiceCode ?? '');
    const code = String(json.QuotaCode ?? '');
    const name = EC2_QUOTAS[code];
    if (service !== 'ec2' || !name || (aws.action !== 'GetServiceQuota' && aws.action !== 'GetAWSDefaultServiceQuota')) {
      return errorResponse('servicequotas', 400, 'NoSuchResourceException', 'The request failed because the specified service does not exist.');
    }
    const applied = this.appliedQuotas.get(`${aws.region}/${code}`);
    if (aws.action === 'GetServiceQuota' && applied === undefined) {
      return errorResponse('servicequotas', 400, 'NoSuchResourceException', 'The request failed because the specified service quota does not exist.');
    }
    const isDefault = aws.action === 'GetAWSDefaultServiceQuota';
    return jsonResponse({
      Quota: {
        ServiceCode: 'ec2',
        ServiceName: 'Amazon Elastic Compute Cloud (Amazon EC2)',
        QuotaArn: `arn:aws:servicequotas:${aws.region}:${isDefault ? '' : ACCOUNT}:ec2/${code}`,
        QuotaCode: code,
        QuotaName: name,
        Value: isDefault ? (DEFAULTS[code] ?? 0) : applied,
        Unit: 'None',
        Adjustable: true,
        GlobalQuota: false,
        UsageMetric: {
          MetricNamespace: 'AWS/Usage',
          MetricName: 'ResourceCount',
          MetricDimensions: { Class: 'Standard/OnDemand', Resource: 'vCPU', Service: 'EC2', Type: 'Resource' },
          MetricStatisticRecommendation: 'Maximum',
        },
      },
    });
  }

  private async policiesOf(role: string): Promise<PolicyStatement[]> {
    const docs: string[] = [];
    const inline = await motoQuery(this.motoUrl, 'iam', { Action: 'ListRolePolicies', RoleName: role });
    for (const m of inline.matchAll(/<member>([^<]+)<\/member>/g)) {
      const xml = await motoQuery(this.motoUrl, 'iam', { Action: 'GetRolePolicy', RoleName: role, PolicyName: m[1]! });
      docs.push(xml.match(/<PolicyDocument>([^<]*)<\/PolicyDocument>/)?.[1] ?? '');
    }
    const attached = await motoQuery(this.motoUrl, 'iam', { Action: 'ListAttachedRolePolicies', RoleName: role });
    for (const m of attached.matchAll(/<PolicyArn>([^<]+)<\/PolicyArn>/g)) {
      const policy = await motoQuery(this.motoUrl, 'iam', { Action: 'GetPolicy', PolicyArn: m[1]! });
      const version = policy.match(/<DefaultVersionId>([^<]+)<\/DefaultVersionId>/)?.[1] ?? 'v1';
      const xml = await motoQuery(this.motoUrl, 'iam', { Action: 'GetPolicyVersion', PolicyArn: m[1]!, VersionId: version });
      docs.push(xml.match(/<Document>([^<]*)<\/Document>/)?.[1] ?? '');
    }
    return docs.flatMap((d) => {
      const text = d.includes('%') ? decodeURIComponent(d) : d.replace(/&quot;/g, '"').replace(/&amp;/g, '&');
      const parsed = JSON.parse(text) as { Statement: PolicyStatement | PolicyStatement[] };
      return Array.isArray(parsed.Statement) ? parsed.Statement : [parsed.Statement];
    });
  }

  private async simulate(aws: AwsRequest): Promise<WireError> {
    const source = aws.params.PolicySourceArn ?? '';
    const role = source.match(/:role\/(?:.*\/)?([^/]+)$/)?.[1];
    if (!role) return errorResponse('iam', 400, 'InvalidInput', `Invalid ARN: ${source}`);
    try {
      await motoQuery(this.motoUrl, 'iam', { Action: 'GetRole', RoleName: role });
    } catch {
      return errorResponse('iam', 404, 'NoSuchEntity', `The role with name ${role} cannot be found.`);
    }
    const statements = await this.policiesOf(role);
    const actions = listParam(aws.params, 'ActionNames.member');
    const resources = listParam(aws.params, 'ResourceArns.member');
    const context = new Map<string, string[]>();
    for (let i = 1; aws.params[`ContextEntries.member.${i}.ContextKeyName`]; i++) {
      context.set(aws.params[`ContextEntries.member.${i}.ContextKeyName`]!.toLowerCase(), listParam(aws.params, `ContextEntries.member.${i}.ContextKeyValues.member`));
    }
    const members: string[] = [];
    for (const action of actions) {
      for (const resource of resources.length ? resources : ['*']) {
        const missing = new Set<string>();
        const applies = (s: PolicyStatement) =>
          (s.Action ? list(s.Action).some((a) => glob(a, action, true)) : !list(s.NotAction).some((a) => glob(a, action, true))) &&
          (s.Resource ? list(s.Resource).some((r) => glob(r, resource)) : !list(s.NotResource).some((r) => glob(r, resource))) &&
          conditionHolds(s.Condition, context, missing);
        const decision = statements.some((s) => s.Effect === 'Deny' && applies(s))
          ? 'explicitDeny'
          : statements.some((s) => s.Effect === 'Allow' && applies(s))
            ? 'allowed'
            : 'implicitDeny';
        members.push(
          `<member><EvalActionName>${xmlEscape(action)}</EvalActionName><EvalResourceName>${xmlEscape(resource)}</EvalResourceName>` +
            `<EvalDecision>${decision}</EvalDecision><MatchedStatements/>` +
            `<MissingContextValues>${[...missing].map((k) => `<member>${xmlEscape(k)}</member>`).join('')}</MissingContextValues></member>`,
        );
      }
    }
    const id = requestId();
    return {
      status: 200,
      headers: { 'content-type': 'text/xml', 'x-amzn-requestid': id },
      body:
        `<SimulatePrincipalPolicyResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/"><SimulatePrincipalPolicyResult>` +
        `<IsTruncated>false</IsTruncated><EvaluationResults>${members.join('')}</EvaluationResults></SimulatePrincipalPolicyResult>` +
        `<ResponseMetadata><RequestId>${id}</RequestId></ResponseMetadata></SimulatePrincipalPolicyResponse>`,
    };
  }

  /** DescribeImages with the root snapshot sizes set by the test. */
  patchDescribeImages(xml: string): string {
    let out = xml;
    for (const [imageId, gib] of this.imageRootGiB) {
      const at = out.indexOf(`<imageId>${imageId}</imageId>`);
      if (at < 0) continue;
      // moto writes an image's blockDeviceMapping before its imageId, after the previous image's.
      const previous = out.lastIndexOf('</imageId>', at);
      const start = out.lastIndexOf('<blockDeviceMapping>', at);
      if (start < 0 || start < previous) continue;
      const end = out.indexOf('</blockDeviceMapping>', start);
      const section = out.slice(start, end).replace(/<volumeSize>\d+<\/volumeSize>/, `<volumeSize>${gib}</volumeSize>`);
      out = out.slice(0, start) + section + out.slice(end);
    }
    return out;
  }
}

/** IAM condition operators the runctl policies use; an unknown operator never holds (conservative). */
function conditionHolds(condition: Condition | undefined, context: Map<string, string[]>, missing: Set<string>): boolean {
  for (const [operator, entries] of Object.entries(condition ?? {})) {
    for (const [key, expected] of Object.entries(entries)) {
      const given = context.get(key.toLowerCase());
      if (operator === 'Null') {
        if ((given === undefined) !== (String(expected) === 'true')) return false;
        continue;
      }
      if (given === undefined) {
        missing.add(key);
        return false;
      }
      const wanted = list(expected as string | string[]);
      const like = operator === 'StringLike' || operator === 'ArnLike';
      const equals = operator === 'StringEquals' || operator === 'ArnEquals';
      if (!like && !equals) return false;
      if (!given.some((g) => wanted.some((w) => (like ? glob(w, g) : w === g)))) return false;
    }
  }
  return true;
}
