// The dashboard end to end, in a real browser (playwright-core driving the system's Chromium):
// the quickstart from the shipped runs/ runs through `runctl reconcile --watch --dashboard` on
// the local provider with one spot interruption, and the controller's dashboard serves it. The
// runs table lists it, its page shows the loss curve across both attempts with the interruption
// and the resume marked, the attempts timeline and the events; new events appear without a
// reload. Then the same page over the shared S3 state store on moto, served by `runctl
// dashboard`. Screenshots go to test-artifacts/.
//
// One quickstart run serves every check (it is the slow part), and one browser serves both stores.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createS3ObjectStore } from '../../src/providers/aws/object-store.js';
import { createProviderRegistry } from '../../src/providers/registry.js';
import { interruptRun } from '../../src/reconciler/operations.js';
import { FileStore } from '../../src/state/file-store.js';
import { SharedStore } from '../../src/state/shared-store.js';
import type { RunStatus } from '../../src/state/types.js';
import type { RunDetail } from '../../src/web/view.js';
import { artifactPath, launchChromium } from '../support/browser.js';
import { createBucket, useMoto } from '../support/moto.js';

const CLI = path.resolve('bin/runctl.js');
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'runctl-dashboard-'));
const repo = path.join(root, 'repo');
const children: ChildProcess[] = [];
let browser: Browser;
let moto: { url: string; release(): Promise<void> } | undefined;

interface Proc {
  child: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
  /** Resolves with the first match of `pattern` in the output, once it appears. */
  seen(pattern: RegExp, what: string): Promise<RegExpExecArray>;
}

function runctl(args: string[], env: NodeJS.ProcessEnv = {}): Proc {
  const child = spawn(process.execPath, [CLI, ...args], { cwd: repo, env: { ...process.env, NO_COLOR: '1', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  let done = false;
  void exited.then(() => (done = true));
  return {
    child,
    output: () => out,
    exited,
    seen: async (pattern, what) => {
      for (;;) {
        const m = pattern.exec(out);
        if (m) return m;
        if (done) throw new Error(`runctl ${args.join(' ')} exited before ${what}; output:\n${out}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
  };
}

/** The run's status record as the controller last wrote it (atomic renames: always whole). */
function statusFile(): RunStatus | undefined {
  try {
    return JSON.parse(fs.readFileSync(path.join(repo, '.runctl', 'state', 'runs', 'quickstart', 'status.json'), 'utf8')) as RunStatus;
  } catch {
    return undefined;
  }
}

async function until<T>(get: () => T | undefined | false, what: string, limitMs = 120_000): Promise<T> {
  const start = Date.now();
  for (;;) {
    const v = get();
    if (v) return v;
    if (Date.now() - start > limitMs) throw new Error(`gave up waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * A copy of the repository's quickstart: the shipped runs/quickstart.yaml and examples/tiny-trainer.
 * Two changes keep the test short and its interruption independent of machine load: the trainer
 * pauses 0.03 s per step instead of 0.06 s, and the test interrupts it (as `runctl interrupt`
 * does: the same notice) once it has trained 30 steps, instead of the rehearsal's 12 s timer.
 */
function copyQuickstart(): void {
  fs.mkdirSync(path.join(repo, 'runs'), { recursive: true });
  const shipped = fs.readFileSync('runs/quickstart.yaml', 'utf8');
  const run = /^(\s+run: .*train\.py .*)$/m;
  const rehearsal = /^\s+rehearsal: .*\n/m;
  expect(shipped).toMatch(run);
  expect(shipped).toMatch(rehearsal);
  fs.writeFileSync(path.join(repo, 'runs', 'quickstart.yaml'), shipped.replace(run, '$1 --step-delay 0.03').replace(rehearsal, ''));
  const skip = new Set(['.venv', 'wheelhouse', 'checkpoints', '__pycache__']);
  fs.cpSync('examples/tiny-trainer', path.join(repo, 'examples', 'tiny-trainer'), { recursive: true, filter: (src) => !skip.has(path.basename(src)) });
  fs.writeFileSync(path.join(repo, 'runctl.yaml'), 'prune: false\n');
}

async function dashboard(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ url: string; proc: Proc }> {
  const proc = runctl(['dashboard', '--listen', '127.0.0.1:0', ...args], env);
  const m = await proc.seen(/dashboard at (http:\/\/127\.0\.0\.1:\d+)\//, 'the dashboard listening');
  return { url: m[1] as string, proc };
}

async function api<T>(url: string): Promise<T> {
  const res = await fetch(url);
  expect(res.status, url).toBe(200);
  return (await res.json()) as T;
}

/** Marks the page so a reload (which would clear the mark) can be told from a live update. */
async function markPage(page: Page): Promise<void> {
  await page.evaluate(() => ((globalThis as unknown as { runctlNoReload: boolean }).runctlNoReload = true));
}
async function notReloaded(page: Page): Promise<boolean> {
  return page.evaluate(() => (globalThis as unknown as { runctlNoReload?: boolean }).runctlNoReload === true);
}

/** An element's data-* attributes (the tests' tsconfig has no DOM types). */
type Tagged = { dataset: Record<string, string | undefined> };

/** What the run page shows of the curve, markers, timeline and events. */
async function runPageFacts(page: Page) {
  return {
    chartAttempts: await page.getAttribute('#chart', 'data-attempts'),
    chartPoints: Number(await page.getAttribute('#chart', 'data-points')),
    chartMarkers: await page.getAttribute('#chart', 'data-markers'),
    canvas: await page.locator('#chart canvas').count(),
    markers: await page.locator('#markers li').evaluateAll((lis) => lis.map((li) => `${(li as unknown as Tagged).dataset.kind}:${(li as unknown as Tagged).dataset.attempt}`)),
    lanes: await page.locator('#timeline .attempt').evaluateAll((els) => els.map((e) => (e as unknown as Tagged).dataset.attempt)),
    lane1Phases: await page.locator('#timeline .attempt[data-attempt="1"] .seg').evaluateAll((els) => els.map((e) => (e as unknown as Tagged).dataset.phase)),
    lane1Ticks: await page.locator('#timeline .attempt[data-attempt="1"] .tick.marker-interrupted').count(),
    events: await page.locator('#events tbody tr').evaluateAll((rows) => rows.map((r) => (r as unknown as Tagged).dataset.action)),
  };
}

beforeAll(async () => {
  copyQuickstart();
  browser = await launchChromium();
});

afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await browser?.close();
  await moto?.release();
  fs.rmSync(root, { recursive: true, force: true });
});

describe('runctl dashboard', () => {
  let detail: RunDetail;

  it('shows the quickstart live: runs table, loss across both attempts with the interruption marked, timeline, events', async () => {
    // A control host's controller serving the dashboard itself (`runctl dashboard` serves the S3 case below).
    const reconcile = runctl(['reconcile', '--watch', 'runs/', '--dashboard', '127.0.0.1:0']);
    const url = (await reconcile.seen(/dashboard at (http:\/\/127\.0\.0\.1:\d+)\//, 'the dashboard listening'))[1] as string;

    const table = await browser.newPage({ viewport: { width: 1280, height: 720 } });
    await table.goto(`${url}/`);
    // Listed as soon as the controller records it, without reloading the page.
    await markPage(table);
    await table.locator('tr[data-run="quickstart"]').waitFor({ timeout: 120_000 });

    // Interrupt attempt 1 once it has trained 30 steps: a spot notice through the sandbox's IMDS.
    await until(() => {
      const s = statusFile();
      return s?.phase === 'Training' && s.attempt === 1 && (s.progress?.step ?? 0) >= 30;
    }, 'attempt 1 to train 30 steps');
    // What `runctl interrupt quickstart` does, without starting another process.
    const providers = createProviderRegistry({ repoRoot: repo, controller: 'default' });
    const delivered = await interruptRun(new FileStore(path.join(repo, '.runctl'), { readOnly: true }), providers, 'quickstart');
    await providers.close();
    expect(delivered.attempt).toBe(1);

    await until(() => statusFile()?.attempt === 2, 'attempt 2');
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    await page.goto(`${url}/runs/quickstart`);
    await page.locator('body[data-loaded="true"]').waitFor();
    await markPage(page);

    // The run finishes while the page is open: its events and phase arrive without a reload.
    await page.locator('#events tr[data-action="Training -> Completed"]').waitFor({ timeout: 120_000 });
    await page.locator('header .phase-Completed').waitFor();
    expect(await notReloaded(page)).toBe(true);
    await until(() => statusFile()?.phase === 'Completed', 'the record to say Completed');

    // The API behind the page: the real history the agents recorded, one series per attempt.
    detail = await api<RunDetail>(`${url}/api/runs/quickstart`);
    const status = statusFile() as RunStatus;
    expect(detail).toMatchObject({ run: 'quickstart', phase: 'Completed', attempt: 2, interruptions: 1, labels: { example: 'tiny-trainer' } });
    expect(detail.history.map((s) => s.attempt)).toEqual([1, 2]);
    for (const s of detail.history) expect(s.points.length, `attempt ${s.attempt} points`).toBeGreaterThan(5);
    const last = detail.history[1]!.points.at(-1)!;
    expect(last.step).toBe(400);
    expect(last.metrics.loss).toBe(status.progress?.loss);
    const interrupted = detail.markers.find((m) => m.kind === 'interrupted')!;
    const resumed = detail.markers.find((m) => m.kind === 'resumed')!;
    expect(interrupted).toMatchObject({ attempt: 1 });
    expect(resumed).toMatchObject({ attempt: 2 });
    expect(interrupted.step).toBeGreaterThanOrEqual(30);
    // Resumed from the checkpoint before the interruption, never from scratch.
    expect(resumed.step).toBeGreaterThan(1);
    expect(resumed.step!).toBeLessThanOrEqual(interrupted.step! + 1);

    // What the page draws from it, once the last update has been rendered.
    await page.locator('#chart[data-attempts="1,2"]').waitFor();
    const facts = await runPageFacts(page);
    expect(facts.canvas).toBeGreaterThan(0);
    expect(facts.chartPoints).toBeGreaterThan(100);
    expect(facts.chartMarkers).toContain(`interrupted@${interrupted.step}`);
    expect(facts.chartMarkers).toContain(`resumed@${resumed.step}`);
    expect(facts.markers).toEqual(expect.arrayContaining(['interrupted:1', 'resumed:2', 'completed:2']));
    expect(facts.lanes).toEqual(['1', '2']);
    expect(facts.lane1Phases).toEqual(expect.arrayContaining(['Provisioning', 'Installing', 'Training', 'Interrupted']));
    expect(facts.lane1Ticks).toBe(1);
    expect(facts.events).toEqual(expect.arrayContaining(['Training -> Interrupted', 'Installing -> Training', 'Training -> Completed']));
    await expect.poll(() => page.locator('#log').textContent()).toContain('done: 400 steps');
    await page.screenshot({ path: artifactPath('dashboard-run.png'), fullPage: true });
    // The part the README shows (docs/dashboard-run.png is this file): summary, curve, timeline.
    await page.screenshot({ path: artifactPath('dashboard-run-top.png'), fullPage: true, clip: { x: 0, y: 0, width: 1280, height: 1080 } });

    // The runs table updated itself too; its filters by phase and label.
    await table.locator('tr[data-run="quickstart"][data-phase="Completed"]').waitFor();
    expect(await notReloaded(table)).toBe(true);
    const row = table.locator('tr[data-run="quickstart"]');
    expect(await row.textContent()).toMatch(/400\/400/);
    await table.screenshot({ path: artifactPath('dashboard-runs.png'), fullPage: true });
    await table.selectOption('#phase', 'Failed');
    await row.waitFor({ state: 'detached' });
    await table.selectOption('#phase', 'Completed');
    await table.fill('#label', 'example=tiny-trainer');
    await row.waitFor();
    await table.fill('#label', 'example=other');
    await row.waitFor({ state: 'detached' });
    expect(new URL(table.url()).search).toBe('?phase=Completed&label=example%3Dother');

    const filtered = await api<{ runs: Array<{ run: string }> }>(`${url}/api/runs?phase=Completed&label=example=tiny-trainer`);
    expect(filtered.runs.map((r) => r.run)).toEqual(['quickstart']);
    expect((await api<{ runs: unknown[] }>(`${url}/api/runs?label=example=other`)).runs).toEqual([]);
    const missing = await fetch(`${url}/api/runs/nope`);
    expect(missing.status).toBe(404);
    expect(((await missing.json()) as { error: string }).error).toContain('no run named "nope"');
    expect((await fetch(`${url}/api/runs`, { method: 'POST' })).status).toBe(405);
    await table.close();
    await page.close();
    reconcile.child.kill('SIGINT');
    expect(await reconcile.exited, reconcile.output()).toBe(0);
  }, 240_000);

  it('serves the same page over the shared S3 state store on moto, with live events', async () => {
    expect(detail, 'the quickstart test ran first').toBeDefined();
    moto = await useMoto();
    const bucket = `runctl-dash-${randomBytes(4).toString('hex')}`;
    await createBucket(moto.url, bucket);
    const objects = createS3ObjectStore(`s3://${bucket}/team`, { endpointUrl: moto.url, region: 'us-east-1', credentials: { accessKeyId: 'testing', secretAccessKey: 'testing' } });
    const shared = new SharedStore(objects);
    await shared.open();
    // The completed quickstart's record and events, as a controller on shared state would have written them.
    const local = new FileStore(path.join(repo, '.runctl'), { readOnly: true });
    const status = (await local.getStatus('quickstart')) as RunStatus;
    const events = await local.readEvents('quickstart');
    await shared.putStatus(status);
    await shared.appendEvents('quickstart', events);

    const env = { AWS_ACCESS_KEY_ID: 'testing', AWS_SECRET_ACCESS_KEY: 'testing', AWS_REGION: 'us-east-1' };
    const { url } = await dashboard(['--state', `s3://${bucket}/team`, '--endpoint-url', moto.url], env);
    expect((await api<{ runs: Array<{ run: string; phase: string }> }>(`${url}/api/runs`)).runs).toMatchObject([{ run: 'quickstart', phase: 'Completed' }]);

    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    await page.goto(`${url}/runs/quickstart`);
    await page.locator('#chart[data-attempts="1,2"]').waitFor();
    await markPage(page);
    const facts = await runPageFacts(page);
    expect(facts.chartMarkers).toContain('interrupted@');
    expect(facts.chartMarkers).toContain('resumed@');
    expect(facts.lanes).toEqual(['1', '2']);
    expect(facts.events).toEqual(expect.arrayContaining(['Training -> Interrupted', 'Training -> Completed']));

    // By time: both attempts, with the gap while the run was not training, and the markers at their times.
    await page.selectOption('#xaxis', 'time');
    await page.locator('#chart[data-axis="time"][data-attempts="1,2"]').waitFor();
    const byTime = await runPageFacts(page);
    // Every recorded point by time; by step, attempt 1's points from the step attempt 2 resumed at are replaced by attempt 2's.
    const [a1, a2] = detail.history as [RunDetail['history'][number], RunDetail['history'][number]];
    expect(byTime.chartPoints).toBe(a1.points.length + a2.points.length);
    expect(facts.chartPoints).toBe(a1.points.filter((p) => p.step < a2.points[0]!.step).length + a2.points.length);
    expect(byTime.chartMarkers).toContain(`interrupted@${detail.markers.find((m) => m.kind === 'interrupted')!.at}`);

    // An event another controller appends to the shared log shows up without a reload.
    await shared.appendEvents('quickstart', [
      { id: `${events.at(-1)!.id}-dashboard-check`, seq: status.eventSeq + 1, at: new Date().toISOString(), run: 'quickstart', uid: status.uid, generation: 1, attempt: 2, kind: 'observation', action: 'dashboard check', message: 'appended by the test' },
    ]);
    await page.locator('#events tr[data-action="dashboard check"]').waitFor();
    expect(await notReloaded(page)).toBe(true);
    await page.screenshot({ path: artifactPath('dashboard-run-s3.png'), fullPage: true });
    await page.close();
    objects.close?.();
  }, 120_000);

  it('refuses a bad or non-loopback --listen with a usage error (exit 2)', async () => {
    const bad = runctl(['dashboard', '--listen', 'localhost:port']);
    expect(await bad.exited).toBe(2);
    expect(bad.output()).toContain('--listen "localhost:port" is not a listen address: use host:port (127.0.0.1:8080)');
    const open = runctl(['dashboard', '--listen', '0.0.0.0:8080']);
    expect(await open.exited).toBe(2);
    expect(open.output()).toContain('listens on loopback only');
    expect(open.output()).toContain('--allow-remote');
  });
});
