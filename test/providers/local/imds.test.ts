// The sandbox's IMDS speaks IMDSv2 as EC2 does when tokens are required: no token, no metadata.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type http from 'node:http';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createImdsServer } from '../../../src/providers/local/imds-server.js';

let dir: string;
let server: http.Server;
let base: string;
let clock = 1_000_000;

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'runctl-imds-'));
  server = createImdsServer({
    instanceId: 'local-x-g1-a1-abcdef',
    lifecycle: 'spot',
    noticeFile: path.join(dir, 'instance-action.json'),
    rebalanceFile: path.join(dir, 'rebalance.json'),
    now: () => clock,
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterEach(async () => {
  await new Promise((resolve) => server.close(resolve));
  await rm(dir, { recursive: true, force: true });
});

async function token(ttl = '60'): Promise<Response> {
  return fetch(`${base}/latest/api/token`, { method: 'PUT', headers: { 'X-aws-ec2-metadata-token-ttl-seconds': ttl } });
}

async function get(item: string, tok?: string): Promise<Response> {
  return fetch(`${base}/latest/meta-data/${item}`, { headers: tok ? { 'X-aws-ec2-metadata-token': tok } : {} });
}

describe('loopback IMDSv2', () => {
  it('answers metadata only with a token, and rejects unknown or expired tokens', async () => {
    expect((await get('instance-id')).status).toBe(401);
    expect((await get('instance-id', 'made-up')).status).toBe(401);

    const res = await token('60');
    expect(res.status).toBe(200);
    const tok = await res.text();
    const id = await get('instance-id', tok);
    expect(id.status).toBe(200);
    expect(await id.text()).toBe('local-x-g1-a1-abcdef');
    expect(await (await get('instance-life-cycle', tok)).text()).toBe('spot');

    clock += 61_000;
    expect((await get('instance-id', tok)).status).toBe(401);
  });

  it('requires a TTL between 1 and 21600 seconds on PUT, and PUT for tokens', async () => {
    expect((await fetch(`${base}/latest/api/token`, { method: 'PUT' })).status).toBe(400);
    expect((await token('0')).status).toBe(400);
    expect((await token('21601')).status).toBe(400);
    expect((await token('abc')).status).toBe(400);
    expect((await fetch(`${base}/latest/api/token`)).status).toBe(405);
  });

  it('serves 404 for spot/instance-action until a notice is delivered, then the notice', async () => {
    const tok = await (await token()).text();
    expect((await get('spot/instance-action', tok)).status).toBe(404);
    expect((await get('events/recommendations/rebalance', tok)).status).toBe(404);

    await writeFile(path.join(dir, 'instance-action.json'), JSON.stringify({ action: 'terminate', time: '2030-01-01T00:02:00Z', noticedAt: '2030-01-01T00:00:00.000Z' }));
    const notice = await get('spot/instance-action', tok);
    expect(notice.status).toBe(200);
    // Exactly EC2's document: the provider's bookkeeping field stays out of it.
    expect(JSON.parse(await notice.text())).toEqual({ action: 'terminate', time: '2030-01-01T00:02:00Z' });
  });
});
