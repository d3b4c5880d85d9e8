// A per-instance IMDSv2 endpoint: `<base>/<instanceId>/latest/...`. Like EC2 with HttpTokens
// required, every metadata read needs a token obtained with PUT /latest/api/token first.
import { randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';

export interface ImdsInstance {
  id: string;
  type: string;
  zone: string;
  market: 'spot' | 'on-demand';
  /** Set when a spot interruption notice was delivered. */
  spotAction?: { action: 'terminate'; time: string };
  rebalanceAt?: string;
  /** events/maintenance/scheduled, as IMDS lists them (Code, Description, NotBefore, State, ...). */
  scheduledEvents?: Record<string, string>[];
}

export class Imds {
  private readonly tokens = new Map<string, { instanceId: string; expires: number }>();
  /** Requests seen, by path, for tests that check the agent polls with a token. */
  readonly hits: { instanceId: string; path: string; status: number }[] = [];

  constructor(private readonly lookup: (instanceId: string) => ImdsInstance | undefined) {}

  handle(instanceId: string, rest: string, req: IncomingMessage, res: ServerResponse): void {
    const instance = this.lookup(instanceId);
    const send = (status: number, body: string, type = 'text/plain') => {
      this.hits.push({ instanceId, path: rest, status });
      if (this.hits.length > 10_000) this.hits.splice(0, 5_000);
      res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body) });
      res.end(body);
    };
    if (!instance) return send(404, 'no such instance');

    if (rest === '/latest/api/token') {
      if (req.method !== 'PUT') return send(405, 'use PUT');
      const ttl = Number(req.headers['x-aws-ec2-metadata-token-ttl-seconds']);
      if (!Number.isInteger(ttl) || ttl < 1 || ttl > 21600) return send(400, 'missing or invalid X-aws-ec2-metadata-token-ttl-seconds');
      const token = randomBytes(24).toString('base64url');
      this.tokens.set(token, { instanceId, expires: Date.now() + ttl * 1000 });
      return send(200, token);
    }

    const token = String(req.headers['x-aws-ec2-metadata-token'] ?? '');
    const held = this.tokens.get(token);
    if (!held || held.instanceId !== instanceId || held.expires < Date.now()) return send(401, 'Unauthorized');

    const meta = rest.replace(/^\/latest\/meta-data\/?/, '');
    switch (meta) {
      case 'instance-id':
        return send(200, instance.id);
      case 'instance-type':
        return send(200, instance.type);
      case 'placement/availability-zone':
        return send(200, instance.zone);
      case 'instance-life-cycle':
        return send(200, instance.market === 'spot' ? 'spot' : 'on-demand');
      case 'spot/instance-action':
        return instance.spotAction ? send(200, JSON.stringify(instance.spotAction), 'application/json') : send(404, 'Not Found');
      case 'spot/termination-time':
        return instance.spotAction ? send(200, instance.spotAction.time) : send(404, 'Not Found');
      case 'events/maintenance/scheduled':
        return send(200, JSON.stringify(instance.scheduledEvents ?? []), 'application/json');
      case 'events/recommendations/rebalance':
        return instance.rebalanceAt
          ? send(200, JSON.stringify({ noticeTime: instance.rebalanceAt }), 'application/json')
          : send(404, 'Not Found');
      default:
        return send(404, 'Not Found');
    }
  }
}
