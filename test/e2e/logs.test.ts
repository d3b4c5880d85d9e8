// `runctl logs` end to end, with real processes: the real CLI (bin/runctl.js) reconciles a local
// run whose job prints megabytes, the real agent ships its output to storage, and `logs` (also
// with -f while the run trains, and piped into `head`) must print every byte (issue 10, inputs 2
// and 3).
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const BIN = path.resolve('bin/runctl.js');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'runctl-logs-e2e-'));
const LINES = 20_000;

// The job shape of issue 10: 20,000 lines (~2 MB), a traceback and exit 1, and (printed at exit,
// after the traceback) a last line without a newline.
const JOB = `
import atexit, sys, time
atexit.register(lambda: (sys.stdout.write("final words without a newline"), sys.stdout.flush()))
for i in range(${LINES}):
    print("line %05d %s" % (i, "x" * 90))
    if i % 2000 == 0:
        time.sleep(0.2)
def load(): raise ValueError("boom: the data file is missing")
load()
`;

function spec(name: string, run: string): string {
  return [
    'apiVersion: runctl.dev/v1alpha1',
    'kind: TrainingRun',
    `metadata: {name: ${name}}`,
    'spec:',
    '  provider: local',
    '  code: {path: ./code}',
    `  run: ${run}`,
    '  checkpoints: {syncInterval: 1s, gracePeriod: 5s}',
    '  recovery: {maxRetriesOnError: 0}',
    '  timeouts: {provisioning: 1m, installing: 1m, training: 2m}',
    '',
  ].join('\n');
}

function runctl(...args: string[]) {
  return spawnSync(process.execPath, [BIN, ...args], { cwd: dir, encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' }, maxBuffer: 64 * 1024 * 1024 });
}

let followed: Promise<{ code: number | null; stdout: string; stderr: string }>;

beforeAll(async () => {
  fs.mkdirSync(path.join(dir, 'runs'));
  fs.mkdirSync(path.join(dir, 'code'));
  fs.writeFileSync(path.join(dir, 'runctl.yaml'), 'prune: false\n');
  fs.writeFileSync(path.join(dir, 'code', 'job.py'), JOB);
  fs.writeFileSync(path.join(dir, 'runs', 'big.yaml'), spec('big', 'python3 job.py'));
  fs.writeFileSync(path.join(dir, 'runs', 'multi.yaml'), spec('multi', '|\n    echo "first step"\n    echo second \\\n      step\n    test -n "$RUNCTL_RUN"'));
  const reconcile = spawn(process.execPath, [BIN, 'reconcile', 'runs'], { cwd: dir, env: { ...process.env, NO_COLOR: '1' }, stdio: 'ignore' });
  const reconciled = new Promise<number | null>((resolve) => reconcile.on('close', resolve));
  // Follow from while the job trains: -f must print everything and end when the run settles.
  for (;;) {
    const out = runctl('status', 'big', '-o', 'json');
    if (out.status === 0 && ['Training', 'Failed'].includes((JSON.parse(out.stdout) as Array<{ phase: string }>)[0]?.phase ?? '')) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  followed = new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, 'logs', 'big', '-f', '--attempt', '1'], { cwd: dir, env: { ...process.env, NO_COLOR: '1' } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
  expect(await reconciled).toBe(1); // big failed: exit 1
}, 180_000);

afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('runctl logs', () => {
  it('prints every line of a 2 MB log, the traceback, and the last line on its own', () => {
    const out = runctl('logs', 'big');
    expect(out.status, out.stderr).toBe(0);
    expect(out.stderr).toBe('');
    const lines = out.stdout.split('\n');
    expect(lines[0]).toBe('==> big attempt 1 <==');
    const jobLines = lines.filter((l) => /^line \d{5} x{90}$/.test(l));
    expect(jobLines).toHaveLength(LINES);
    expect(jobLines.at(-1)).toBe(`line ${String(LINES - 1).padStart(5, '0')} ${'x'.repeat(90)}`);
    expect(out.stdout).toContain('Traceback (most recent call last):');
    expect(out.stdout).toContain('ValueError: boom: the data file is missing\n');
    // On its own line: not glued to runctl's "attempt ended" note.
    expect(lines).toContain('final words without a newline');
    expect(lines.at(-2)).toMatch(/^\[runctl-agent\] \S+ attempt ended: failed \(exit code 1\)$/);
    expect(out.stdout.endsWith('\n')).toBe(true);
  });

  it('-f started while the job trained printed the same, then ended with the run', async () => {
    const f = await followed;
    expect(f.code, f.stderr).toBe(0);
    expect(f.stderr).toBe('');
    const all = runctl('logs', 'big', '--attempt', '1');
    expect(f.stdout).toBe(all.stdout);
    expect(f.stdout).toContain('ValueError: boom: the data file is missing\n');
  });

  it('--tail N prints the last N lines', () => {
    const out = runctl('logs', 'big', '--tail', '3');
    expect(out.status, out.stderr).toBe(0);
    const all = runctl('logs', 'big').stdout.trimEnd().split('\n');
    expect(out.stdout).toBe(['==> big attempt 1 <==', ...all.slice(-3)].join('\n') + '\n');
  });

  it('--since keeps only recent output, and refuses what is not a duration', () => {
    expect(runctl('logs', 'big', '--since', '1h').stdout).toBe(runctl('logs', 'big').stdout);
    // Make every stored segment old: nothing was stored in the last minute any more.
    // runs/big/<uid>/g1/a1/logs (the uid level names this incarnation of the run).
    const runDir = path.join(dir, '.runctl', 'local', 'storage', 'runs', 'big');
    const uid = fs.readdirSync(runDir).find((d) => fs.existsSync(path.join(runDir, d, 'g1', 'a1', 'logs')));
    const logs = path.join(runDir, uid ?? '', 'g1', 'a1', 'logs');
    const old = new Date(Date.now() - 3_600_000);
    for (const f of fs.readdirSync(logs)) fs.utimesSync(path.join(logs, f), old, old);
    const recent = runctl('logs', 'big', '--since', '1m');
    expect(recent.status, recent.stderr).toBe(0);
    expect(recent.stdout).toBe('');
    expect(runctl('logs', 'big', '--since', '2h').stdout).toContain('ValueError: boom');
    const bad = runctl('logs', 'big', '--since', 'yesterday');
    expect(bad.status).toBe(2);
    expect(bad.stderr).toBe('runctl: --since must be a duration such as 90s, 10m or 2h (got "yesterday")\n');
  });

  it('refuses a generation or attempt the run does not have, naming the ones it has', () => {
    const gen = runctl('logs', 'big', '--generation', '7');
    expect(gen.status).toBe(1);
    expect(gen.stderr).toBe('runctl: run "big" has no generation 7 with logs (generations: 1)\n');
    const attempt = runctl('logs', 'big', '--attempt', '4');
    expect(attempt.status).toBe(2);
    expect(attempt.stderr).toBe('runctl: run "big" has no attempt 4 in generation 1 (attempts: 1)\n');
    expect(runctl('logs', 'big', '--tail', '-1').stderr).toBe('runctl: --tail must be a whole number from 0 (got "-1")\n');
  });

  it('describe shows a multi-line run: as written, and a failure message that does not repeat itself', () => {
    const multi = runctl('describe', 'multi');
    expect(multi.status, multi.stderr).toBe(0);
    expect(multi.stdout).toMatch(/^  Run: +echo "first step"\n {2,}echo second \\\n {2,}  step\n {2,}test -n "\$RUNCTL_RUN"\n/m);
    expect(multi.stdout).toMatch(/^Phase: +Completed/m);
    const big = runctl('describe', 'big');
    expect(big.stdout).toMatch(/^Failure:\n  the job exited with code 1 on attempt 1; last output:\n/m);
    expect(big.stdout).not.toContain('(the job exited');
  });

  it('ends quietly with exit 0 when its reader goes away (| head -1)', () => {
    // 2 MB does not fit a pipe's buffer: runctl is still writing when head exits.
    const out = spawnSync('bash', ['-c', `set -o pipefail; "${process.execPath}" "${BIN}" logs big 2>"${dir}/err.txt" | head -1`], { cwd: dir, encoding: 'utf8' });
    expect(out.stdout).toBe('==> big attempt 1 <==\n');
    expect(fs.readFileSync(path.join(dir, 'err.txt'), 'utf8')).toBe('');
    expect(out.status).toBe(0);
  });
});
