// The dashboard's HTTP server: a read-only JSON API over the state store, server-sent events that
// push a page's data again whenever it changes, and the static page (plain HTML and ES modules,
// no build step; the chart library is served from the package's own node_modules, never a CDN).
//
// Routing is Hono on @hono/node-server: a small, well-kept router with a built-in SSE helper and
// no dependencies, rather than routes matched by hand on node:http.
//
// Live updates are level-triggered, like the reconciler: each open stream re-reads what its page
// shows every `pollMs` and sends it when it differs from what it last sent. No event is trusted to
// carry state, so a missed write or a restarted controller can never leave a page stale.
import { readFile } from 'node:fs/promises';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { serve } from '@hono/node-server';
import { Hono, type Context } from 'hono';
import { streamSSE } from 'hono/streaming';
import type { DashboardAddress } from './listen.js';
import { DashboardSource, UnknownRunError, type RunsList } from './source.js';
import type { RunSummary } from './view.js';

/** How often an open page's data is re-read, in milliseconds. */
export const DEFAULT_POLL_MS = 1000;

export interface DashboardServerOptions {
  source: DashboardSource;
  address: DashboardAddress;
  pollMs?: number;
  /** Where a failure to read state for a stream is reported (the terminal running the dashboard). */
  log?: (line: string) => void;
}

export interface DashboardServer {
  /** `http://host:port` actually bound (the port resolved when 0 was asked for). */
  url: string;
  close(): Promise<void>;
}

/** Files of the page, by the name it requests them under: nothing else on disk is reachable. */
const STATIC: Record<string, { file: string; type: string }> = {
  'style.css': { file: 'style.css', type: 'text/css; charset=utf-8' },
  'common.js': { file: 'common.js', type: 'text/javascript; charset=utf-8' },
  'runs.js': { file: 'runs.js', type: 'text/javascript; charset=utf-8' },
  'run.js': { file: 'run.js', type: 'text/javascript; charset=utf-8' },
  'chart.js': { file: 'chart.js', type: 'text/javascript; charset=utf-8' },
};

const staticDir = fileURLToPath(new URL('./static/', import.meta.url));
const uplotDir = path.join(path.dirname(createRequire(import.meta.url).resolve('uplot/package.json')), 'dist');
const VENDOR: Record<string, { file: string; type: string }> = {
  'uPlot.esm.js': { file: path.join(uplotDir, 'uPlot.esm.js'), type: 'text/javascript; charset=utf-8' },
  'uPlot.min.css': { file: path.join(uplotDir, 'uPlot.min.css'), type: 'text/css; charset=utf-8' },
};

/** `?phase=Training&label=team=vision`: the runs table's filters, applied the same way by the API. */
export function filterRuns(runs: RunSummary[], query: { phase?: string[]; label?: string[] }): RunSummary[] {
  const phases = (query.phase ?? []).flatMap((p) => p.split(',')).filter(Boolean);
  const labels = (query.label ?? []).filter(Boolean).map((l) => {
    const i = l.indexOf('=');
    return i < 0 ? { key: l, value: undefined } : { key: l.slice(0, i), value: l.slice(i + 1) };
  });
  return runs.filter(
    (r) =>
      (phases.length === 0 || phases.includes(r.phase)) &&
      labels.every(({ key, value }) => (value === undefined ? key in r.labels : r.labels[key] === value)),
  );
}

export function createDashboardApp(opts: Omit<DashboardServerOptions, 'address'> & { allowedHosts?: (host: string) => boolean }): Hono {
  const { source } = opts;
  const pollMs = opts.pollMs ?? DEFAULT_POLL_MS;
  const app = new Hono();

  app.use('*', async (c, next) => {
    // A page on another site must not read this one through a rebound DNS name (DNS rebinding):
    // on loopback, only requests addressed to loopback are answered.
    const host = c.req.header('host') ?? '';
    if (opts.allowedHosts && !opts.allowedHosts(host)) {
      return c.text(`host ${JSON.stringify(host)} is not this dashboard's address; open it at 127.0.0.1 or localhost\n`, 421);
    }
    if (c.req.method !== 'GET' && c.req.method !== 'HEAD') {
      return c.text('the dashboard is read-only: GET only\n', 405, { allow: 'GET, HEAD' });
    }
    await next();
    c.header('x-content-type-options', 'nosniff');
    c.header('referrer-policy', 'no-referrer');
    c.header('x-frame-options', 'DENY');
    c.header('content-security-policy', "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'");
    if (!c.res.headers.has('cache-control')) c.header('cache-control', 'no-store');
  });

  app.get('/healthz', (c) => c.text('ok\n'));
  app.get('/favicon.ico', (c) => c.body(null, 204));
  app.get('/', (c) => page(c, 'index.html'));
  app.get('/runs/:name', (c) => page(c, 'run.html'));
  app.get('/static/:file', (c) => asset(c, STATIC[c.req.param('file')], staticDir));
  app.get('/vendor/:file', (c) => asset(c, VENDOR[c.req.param('file')]));

  app.get('/api/runs', async (c) => {
    const list = await source.list();
    return c.json({ ...list, runs: filterRuns(list.runs, { phase: c.req.queries('phase'), label: c.req.queries('label') }) });
  });
  app.get('/api/runs/:name', async (c) => {
    try {
      return c.json(await source.detail(c.req.param('name')));
    } catch (err) {
      if (err instanceof UnknownRunError) return c.json({ error: err.message }, 404);
      throw err;
    }
  });

  app.get('/api/stream', (c) => stream(c, 'runs', () => source.list()));
  app.get('/api/runs/:name/stream', (c) => {
    const name = c.req.param('name');
    return stream(c, 'run', async () => {
      try {
        return await source.detail(name);
      } catch (err) {
        if (err instanceof UnknownRunError) return { error: err.message };
        throw err;
      }
    });
  });

  app.notFound((c) => c.json({ error: `not found: ${c.req.path} (the API is /api/runs and /api/runs/<name>)` }, 404));
  app.onError((err, c) => {
    opts.log?.(`dashboard: ${c.req.path}: ${err.message}`);
    return c.json({ error: err.message }, 500);
  });

  /** Sends `read()`'s result as event `name` now and whenever it changes, until the page goes. */
  function stream(c: Context, name: string, read: () => Promise<unknown>): Response {
    return streamSSE(c, async (sse) => {
      let last = '';
      let failing = '';
      let id = 0;
      let closed = false;
      sse.onAbort(() => {
        closed = true;
      });
      while (!closed) {
        try {
          const data = JSON.stringify(await read());
          failing = '';
          if (data !== last) {
            last = data;
            await sse.writeSSE({ event: name, data, id: String(++id) });
          }
        } catch (err) {
          const message = (err as Error).message;
          if (message !== failing) {
            failing = message;
            opts.log?.(`dashboard: reading state for a live page: ${message} (trying again)`);
            await sse.writeSSE({ event: 'problem', data: JSON.stringify({ error: message }) });
          }
        }
        await sse.sleep(pollMs);
      }
    });
  }

  return app;
}

async function page(c: Context, file: string): Promise<Response> {
  return c.html(await readFile(path.join(staticDir, file), 'utf8'));
}

async function asset(c: Context, entry: { file: string; type: string } | undefined, dir?: string): Promise<Response> {
  if (!entry) return c.text('not found\n', 404);
  const body = await readFile(dir ? path.join(dir, entry.file) : entry.file);
  return c.body(body, 200, { 'content-type': entry.type, 'cache-control': 'no-cache' });
}

/** Loopback names a browser may use for a dashboard bound to loopback. */
function loopbackHost(port: number): (host: string) => boolean {
  const allowed = new Set(['127.0.0.1', 'localhost', '[::1]'].map((h) => `${h}:${port}`));
  return (host) => allowed.has(host.toLowerCase()) || /^127\.\d+\.\d+\.\d+:\d+$/.test(host) && host.endsWith(`:${port}`);
}

/** Starts the dashboard; resolves once it listens. Throws on a port in use, with what to do. */
export async function startDashboard(opts: DashboardServerOptions): Promise<DashboardServer> {
  let port = opts.address.port;
  const app = createDashboardApp({ ...opts, allowedHosts: opts.address.loopback ? (h) => loopbackHost(port)(h) : undefined });
  const server = await new Promise<Server>((resolve, reject) => {
    const s = serve({ fetch: app.fetch, hostname: opts.address.host, port: opts.address.port }) as Server;
    const onError = (err: NodeJS.ErrnoException) => {
      const reason =
        err.code === 'EADDRINUSE'
          ? 'the port is already in use (another dashboard?): choose another port'
          : err.code === 'EACCES'
            ? 'permission denied: ports below 1024 need privileges; choose a port above 1024'
            : err.code === 'EADDRNOTAVAIL'
              ? 'the host is not an address of this machine'
              : err.message;
      reject(new Error(`cannot listen on ${opts.address.host}:${opts.address.port}: ${reason}`));
    };
    s.once('error', onError);
    s.once('listening', () => {
      s.off('error', onError);
      resolve(s);
    });
  });
  const bound = server.address() as AddressInfo;
  port = bound.port;
  // Every interface: the URL to print is the one that works from this machine.
  const address = bound.address === '0.0.0.0' ? '127.0.0.1' : bound.address === '::' ? '::1' : bound.address;
  const host = address.includes(':') ? `[${address}]` : address;
  return {
    url: `http://${host}:${bound.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

export type { RunsList };
