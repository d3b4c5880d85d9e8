// moto (`python3 -m moto.server`) as the AWS of the integration tests, on a free loopback port.
//
// Two ways to use it:
// - as a vitest globalSetup module (`globalSetup: ['test/support/moto.ts']`): one server for the
//   whole run; its URL reaches test files as RUNCTL_TEST_MOTO_URL and as `inject('motoUrl')`;
// - lazily from a test file: `const moto = await useMoto()` in beforeAll and `await moto.release()`
//   in afterAll starts a server only when no global one is running.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

export const MOTO_URL_ENV = 'RUNCTL_TEST_MOTO_URL';

declare module 'vitest' {
  interface ProvidedContext {
    /** URL of the moto server started by the global setup. */
    motoUrl: string;
  }
}

export interface MotoServer {
  url: string;
  stop(): Promise<void>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

async function reachable(url: string): Promise<boolean> {
  try {
    const res = await fetch(`${url}/moto-api/data.json`, { signal: AbortSignal.timeout(2000) });
    await res.arrayBuffer();
    return res.ok;
  } catch {
    return false;
  }
}

/** Starts moto and resolves once it answers; rejects with an installation hint if it cannot start. */
export async function startMoto(opts: { startTimeoutMs?: number } = {}): Promise<MotoServer> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  // moto logs every request to stderr. It goes to a file, not a pipe: a test that blocks its own
  // event loop (spawnSync of the CLI) cannot drain a pipe, and once 64 KiB of log filled it moto
  // blocked on the write and every AWS call hung.
  const logDir = fs.mkdtempSync(path.join(os.tmpdir(), 'runctl-moto-'));
  const logFile = path.join(logDir, 'moto.log');
  const logFd = fs.openSync(logFile, 'w');
  const child: ChildProcess = spawn('python3', ['-m', 'moto.server', '-H', '127.0.0.1', '-p', String(port)], {
    stdio: ['ignore', 'ignore', logFd],
    env: { ...process.env, PYTHONUNBUFFERED: '1' },
  });
  fs.closeSync(logFd);
  const logTail = (): string => {
    try {
      return fs.readFileSync(logFile, 'utf8').slice(-4000);
    } catch {
      return '';
    }
  };
  const removeLog = () => fs.rmSync(logDir, { recursive: true, force: true });
  let exited: string | undefined;
  child.on('exit', (code, signal) => {
    exited = `exited with ${signal ?? code}`;
  });
  child.on('error', (err) => {
    exited = `could not be started: ${err.message}`;
  });

  const deadline = Date.now() + (opts.startTimeoutMs ?? 30_000);
  while (!(await reachable(url))) {
    if (exited !== undefined || Date.now() > deadline) {
      child.kill('SIGKILL');
      const stderr = logTail();
      removeLog();
      const missing = /No module named moto|ModuleNotFoundError|ENOENT/.test(stderr + (exited ?? ''));
      throw new Error(
        missing
          ? "moto is not installed: the AWS integration tests need `python3 -m moto.server` (pip install 'moto[server]>=5.2')"
          : `moto server on ${url} ${exited ?? 'did not answer in time'}${stderr ? `:\n${stderr}` : ''}`,
      );
    }
    await new Promise((r) => setTimeout(r, 150));
  }

  return {
    url,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) {
          removeLog();
          return resolve();
        }
        child.once('exit', () => {
          removeLog();
          resolve();
        });
        child.kill('SIGTERM');
        setTimeout(() => child.kill('SIGKILL'), 3000).unref();
      }),
  };
}

/** The shared server if a global setup started one, else a private one this caller must release. */
export async function useMoto(): Promise<{ url: string; release(): Promise<void> }> {
  const shared = process.env[MOTO_URL_ENV];
  if (shared) return { url: shared, release: async () => {} };
  const server = await startMoto();
  return { url: server.url, release: () => server.stop() };
}

/** vitest globalSetup entry: start moto once for the run and stop it afterwards. */
export default async function setup(ctx?: { provide?: (key: string, value: unknown) => void }): Promise<() => Promise<void>> {
  const server = await startMoto();
  process.env[MOTO_URL_ENV] = server.url;
  ctx?.provide?.('motoUrl', server.url);
  return async () => {
    await server.stop();
  };
}

// Helpers for arranging moto state that the provider expects to exist (IAM, buckets). moto does
// not check signatures, so a syntactically valid SigV4 header naming the service is enough.

function authFor(service: string, region = 'us-east-1'): string {
  return `AWS4-HMAC-SHA256 Credential=testing/20240101/${region}/${service}/aws4_request, SignedHeaders=host, Signature=0`;
}

/** A raw AWS Query-protocol call (IAM, EC2) against moto, returning the XML body. */
export async function motoQuery(
  motoUrl: string,
  service: 'iam' | 'ec2',
  params: Record<string, string>,
  region = 'us-east-1',
): Promise<string> {
  const version = service === 'iam' ? '2010-05-08' : '2016-11-15';
  const res = await fetch(`${motoUrl}/`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: authFor(service, region) },
    body: new URLSearchParams({ Version: version, ...params }).toString(),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`moto ${service} ${params.Action} failed (${res.status}): ${text.slice(0, 500)}`);
  return text;
}

/** Creates an IAM instance profile in moto (RunInstances checks that the named profile exists). */
export async function createInstanceProfile(motoUrl: string, name: string): Promise<void> {
  try {
    await motoQuery(motoUrl, 'iam', { Action: 'CreateInstanceProfile', InstanceProfileName: name });
  } catch (err) {
    if (!/EntityAlreadyExists/.test(String(err))) throw err;
  }
}

export async function createBucket(motoUrl: string, bucket: string, region = 'us-east-1'): Promise<void> {
  // Outside us-east-1, S3 wants the region in the body too (CreateBucketConfiguration).
  const body =
    region === 'us-east-1'
      ? undefined
      : `<CreateBucketConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><LocationConstraint>${region}</LocationConstraint></CreateBucketConfiguration>`;
  const res = await fetch(`${motoUrl}/${bucket}`, { method: 'PUT', headers: { authorization: authFor('s3', region) }, body });
  const text = await res.text();
  if (!res.ok && !/BucketAlreadyOwnedByYou/.test(text)) throw new Error(`moto CreateBucket ${bucket} failed (${res.status}): ${text}`);
}
