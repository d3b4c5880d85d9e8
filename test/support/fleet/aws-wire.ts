// Just enough of the AWS wire protocols for the fleet proxy to recognise a request and to answer
// in the exact error format each SDK parses: EC2 Query (form body, XML errors), SSM JSON 1.1
// (X-Amz-Target, JSON errors) and S3 REST-XML.
import type { IncomingHttpHeaders } from 'node:http';

export type Service = 'ec2' | 'ssm' | 's3' | 'iam' | 'sts' | 'servicequotas' | 'pricing' | 'other';

export interface AwsRequest {
  service: Service;
  /** EC2/SSM action name, or `METHOD /path` for S3. */
  action: string;
  region: string;
  userAgent: string;
  /** Form parameters (EC2) or the parsed JSON body (SSM). */
  params: Record<string, string>;
  json?: Record<string, unknown>;
}

export function parseRequest(method: string, url: string, headers: IncomingHttpHeaders, body: Buffer): AwsRequest {
  const auth = String(headers.authorization ?? '');
  const scope = auth.match(/Credential=[^/]+\/\d+\/([^/]+)\/([^/]+)\/aws4_request/);
  const region = scope?.[1] ?? 'us-east-1';
  const scoped = scope?.[2] ?? '';
  const service: Service = (['ec2', 'ssm', 's3', 'iam', 'sts', 'servicequotas'] as const).find((s) => s === scoped) ?? 'other';
  const userAgent = String(headers['user-agent'] ?? '');
  const target = String(headers['x-amz-target'] ?? '');
  if (service === 'ssm' || target.startsWith('AmazonSSM.')) {
    let json: Record<string, unknown> = {};
    try {
      json = JSON.parse(body.toString('utf8') || '{}') as Record<string, unknown>;
    } catch {
      json = {};
    }
    return { service: 'ssm', action: target.replace(/^AmazonSSM\./, ''), region, userAgent, params: {}, json };
  }
  if (service === 'servicequotas' || target.startsWith('ServiceQuotasV20190624.')) {
    let json: Record<string, unknown> = {};
    try {
      json = JSON.parse(body.toString('utf8') || '{}') as Record<string, unknown>;
    } catch {
      json = {};
    }
    return { service: 'servicequotas', action: target.replace(/^ServiceQuotasV20190624\./, ''), region, userAgent, params: {}, json };
  }
  if (scoped === 'pricing' || target.startsWith('AWSPriceListService.')) {
    let json: Record<string, unknown> = {};
    try {
      json = JSON.parse(body.toString('utf8') || '{}') as Record<string, unknown>;
    } catch {
      json = {};
    }
    return { service: 'pricing', action: target.replace(/^AWSPriceListService\./, ''), region, userAgent, params: {}, json };
  }
  if (service === 's3') {
    return { service, action: `${method} ${url.split('?')[0]}`, region, userAgent, params: {} };
  }
  const form = new URLSearchParams(method === 'POST' ? body.toString('utf8') : (url.split('?')[1] ?? ''));
  const params = Object.fromEntries(form.entries());
  return { service, action: params.Action ?? `${method} ${url}`, region, userAgent, params };
}

/** Values of an EC2 Query list parameter, e.g. `InstanceId.1`, `InstanceId.2`. */
export function listParam(params: Record<string, string>, name: string): string[] {
  return Object.keys(params)
    .filter((k) => k.startsWith(`${name}.`) && /^\d+$/.test(k.slice(name.length + 1)))
    .sort((a, b) => Number(a.slice(name.length + 1)) - Number(b.slice(name.length + 1)))
    .map((k) => params[k] ?? '');
}

export interface WireError {
  status: number;
  headers: Record<string, string>;
  body: string;
}

let counter = 0;
export function requestId(): string {
  counter++;
  return `fleet-${process.pid}-${Date.now().toString(36)}-${counter}`;
}

export const xmlEscape = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

export function errorResponse(service: Service, status: number, code: string, message: string): WireError {
  const id = requestId();
  if (service === 'ssm' || service === 'servicequotas' || service === 'pricing') {
    return {
      status,
      headers: { 'content-type': 'application/x-amz-json-1.1', 'x-amzn-requestid': id },
      body: JSON.stringify({ __type: code, message }),
    };
  }
  if (service === 's3') {
    return {
      status,
      headers: { 'content-type': 'application/xml', 'x-amz-request-id': id },
      body: `<?xml version="1.0" encoding="UTF-8"?><Error><Code>${code}</Code><Message>${xmlEscape(message)}</Message><RequestId>${id}</RequestId></Error>`,
    };
  }
  if (service === 'iam' || service === 'sts') {
    // The awsQuery protocol's error document (IAM, STS): ErrorResponse/Error/{Type,Code,Message}.
    return {
      status,
      headers: { 'content-type': 'text/xml', 'x-amzn-requestid': id },
      body: `<ErrorResponse xmlns="https://${service}.amazonaws.com/doc/${service === 'iam' ? '2010-05-08' : '2011-06-15'}/"><Error><Type>Sender</Type><Code>${code}</Code><Message>${xmlEscape(message)}</Message></Error><RequestId>${id}</RequestId></ErrorResponse>`,
    };
  }
  return {
    status,
    headers: { 'content-type': 'text/xml;charset=UTF-8', 'x-amzn-requestid': id },
    body: `<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>${code}</Code><Message>${xmlEscape(message)}</Message></Error></Errors><RequestID>${id}</RequestID></Response>`,
  };
}

export function jsonResponse(body: unknown, contentType = 'application/x-amz-json-1.1'): WireError {
  return {
    status: 200,
    headers: { 'content-type': contentType, 'x-amzn-requestid': requestId() },
    body: JSON.stringify(body),
  };
}

/** Instance ids in a RunInstances / TerminateInstances XML response. */
export function instanceIdsInXml(xml: string): string[] {
  return [...new Set([...xml.matchAll(/<instanceId>(i-[0-9a-f]+)<\/instanceId>/g)].map((m) => m[1] as string))];
}

/**
 * Rewrites the state reason (and transition reason) of one instance in a DescribeInstances
 * response. moto cannot produce spot terminations, so the proxy supplies what EC2 would say.
 */
export function patchStateReason(xml: string, instanceId: string, code: string, message: string, transition: string): string {
  const at = xml.indexOf(`<instanceId>${instanceId}</instanceId>`);
  if (at < 0) return xml;
  // In moto's template <stateReason> precedes <instanceId> within the instance item, <reason> follows it.
  const start = xml.lastIndexOf('<stateReason>', at);
  const end = xml.indexOf('</stateReason>', start);
  let out = xml;
  if (start >= 0 && end >= 0 && end < at) {
    out = `${xml.slice(0, start)}<stateReason><code>${code}</code><message>${xmlEscape(message)}</message></stateReason>${xml.slice(end + '</stateReason>'.length)}`;
  }
  const idAt = out.indexOf(`<instanceId>${instanceId}</instanceId>`);
  const itemEnd = out.indexOf('</instancesSet>', idAt);
  const reason = /<reason\/>|<reason>[^<]*<\/reason>/g;
  reason.lastIndex = idAt;
  const m = reason.exec(out);
  if (m && (itemEnd < 0 || m.index < itemEnd)) {
    out = `${out.slice(0, m.index)}<reason>${xmlEscape(transition)}</reason>${out.slice(m.index + m[0].length)}`;
  }
  return out;
}

/**
 * A DescribeInstances response without the reservations that hold any of `hidden`: what EC2 answers
 * in the seconds after RunInstances, before a new instance is visible (EC2 API reference, "Eventual
 * consistency"). runctl launches one instance per reservation, so dropping the reservation drops
 * exactly that instance.
 */
export function withoutInstances(xml: string, hidden: ReadonlySet<string>): string {
  const open = xml.indexOf('<reservationSet>');
  if (open < 0 || hidden.size === 0) return xml;
  const tokens = /<item>|<\/item>|<\/reservationSet>/g;
  tokens.lastIndex = open;
  const ranges: [number, number][] = [];
  let depth = 0;
  let start = -1;
  for (let m = tokens.exec(xml); m; m = tokens.exec(xml)) {
    if (m[0] === '</reservationSet>') {
      if (depth === 0) break;
      continue;
    }
    if (m[0] === '<item>') {
      if (depth === 0) start = m.index;
      depth++;
    } else if (--depth === 0) {
      ranges.push([start, m.index + m[0].length]);
    }
  }
  let out = '';
  let at = 0;
  for (const [from, to] of ranges) {
    const ids = instanceIdsInXml(xml.slice(from, to));
    if (!ids.some((id) => hidden.has(id))) continue;
    out += xml.slice(at, from);
    at = to;
  }
  return out + xml.slice(at);
}
