// An IMDSv2-compatible endpoint for one local instance: the same protocol the agent speaks to EC2
// (PUT a session token, then GET metadata with it), so the agent's interruption path runs
// unchanged. Only the paths the agent and a curious user need are served:
//   PUT /latest/api/token                               X-aws-ec2-metadata-token-ttl-seconds: 1..21600
//   GET /latest/meta-data/instance-id
//   GET /latest/meta-data/instance-type
//   GET /latest/meta-data/instance-life-cycle           spot | on-demand
//   GET /latest/meta-data/spot/instance-action          404 until a notice is delivered
//   GET /latest/meta-data/events/recommendations/rebalance   404 unless one is delivered
// Every GET needs a valid X-aws-ec2-metadata-token (401 otherwise), as on an instance that
// requires IMDSv2. Notices are files in the sandbox, read on each request, so the provider
// delivers one by writing a file and nothing has to talk to this process.
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import http from 'node:http';

export interface ImdsOptions {
  instanceId: string;
  lifecycle: 'spot' | 'on-demand';
  noticeFile: string;
  rebalanceFile: string;
  now?: () => number;
}

const MAX_TTL_SECONDS = 21600;

export function createImdsServer(opts: ImdsOptions): http.Server {
  const now = opts.now ?? Date.now;
  const tokens = new Map<string, number>();

  const validToken = (token: string | undefined): boolean => {
    if (!token) return false;
    const expires = tokens.get(token);
    if (expires === undefined) return false;
    if (expires <= now()) {
      tokens.delete(token);
      return false;
    }
    return true;
  };

  const issueToken = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    // EC2 refuses token requests that went through a proxy.
    if (req.headers['x-forwarded-for'] !== undefined) return send(res, 403, 'Forbidden');
    const raw = req.headers['x-aws-ec2-metadata-token-ttl-seconds'];
    const ttl = Number(raw);
    if (typeof raw !== 'string' || !/^\d+$/.test(raw) || ttl < 1 || ttl > MAX_TTL_SECONDS) return send(res, 400, 'Bad Request');
    for (const [token, expires] of tokens) if (expires <= now()) tokens.delete(token);
    const token = randomBytes(32).toString('base64url');
    tokens.set(token, now() + ttl * 1000);
    res.setHeader('X-aws-ec2-metadata-token-ttl-seconds', String(ttl));
    send(res, 200, token);
  };

  const metadata = async (item: string): Promise<string | undefined> => {
    switch (item) {
      case '':
        return ['events/', 'instance-id', 'instance-life-cycle', 'instance-type', 'spot/'].join('\n');
      case 'instance-id':
        return opts.instanceId;
      case 'instance-type':
        return 'local';
      case 'instance-life-cycle':
        return opts.lifecycle;
      case 'spot/instance-action': {
        const notice = await readJson(opts.noticeFile);
        if (!notice) return undefined;
        return JSON.stringify({ action: notice.action ?? 'terminate', time: notice.time });
      }
      case 'events/recommendations/rebalance': {
        const rebalance = await readJson(opts.rebalanceFile);
        return rebalance ? JSON.stringify({ noticeTime: rebalance.noticeTime }) : undefined;
      }
      default:
        return undefined;
    }
  };

  return http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://imds');
    if (url.pathname === '/latest/api/token') {
      if (req.method !== 'PUT') return send(res, 405, 'Method Not Allowed');
      return issueToken(req, res);
    }
    if (!url.pathname.startsWith('/latest/meta-data')) return send(res, 404, 'Not Found');
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, 'Method Not Allowed');
    const token = req.headers['x-aws-ec2-metadata-token'];
    if (!validToken(typeof token === 'string' ? token : undefined)) return send(res, 401, 'Unauthorized');
    const item = url.pathname.replace(/^\/latest\/meta-data\/?/, '').replace(/\/$/, '');
    metadata(item).then(
      (body) => (body === undefined ? send(res, 404, 'Not Found') : send(res, 200, body)),
      () => send(res, 500, 'Internal Server Error'),
    );
  });
}

function send(res: http.ServerResponse, status: number, body: string): void {
  res.writeHead(status, { 'Content-Type': 'text/plain', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

async function readJson(file: string): Promise<Record<string, string> | undefined> {
  try {
    return JSON.parse(await readFile(file, 'utf8')) as Record<string, string>;
  } catch {
    return undefined;
  }
}
