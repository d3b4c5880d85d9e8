// `runctl reconcile --watch` as a process (the real CLI through test/support/gitops-harness.ts on
// the in-memory cloud): spec edits suspend and resume a run, an invalid edit is reported with the
// same diagnostics as `validate` and changes nothing, and SIGINT stops it cleanly with exit 0.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { spec } from './watch-support.js';
import { agentIn } from '../support/memory-provider.js';
import { harnessCommand } from '../support/harness-bundle.js';

const HARNESS = harnessCommand('gitops-harness');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'runctl-watch-cli-'));

afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('runctl reconcile --watch (process)', () => {
  it('follows edits (suspend, invalid, fix and resume) and stops on SIGINT with exit 0, releasing the lock', async () => {
    fs.mkdirSync(path.join(dir, 'runs'));
    fs.mkdirSync(path.join(dir, 'code'));
    fs.writeFileSync(path.join(dir, 'code', 'train.py'), 'print(1)\n');
    fs.writeFileSync(path.join(dir, 'runctl.yaml'), 'prune: false\n');
    fs.writeFileSync(path.join(dir, 'runs', 'a.yaml'), spec('a'));
    const child = spawn(process.execPath, [...HARNESS, path.join(dir, 'world.json'), 'reconcile', '--watch'], {
      cwd: dir,
      env: { ...process.env, NO_COLOR: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    const seen = async (pattern: RegExp, what: string) => {
      const start = Date.now();
      while (!pattern.test(out)) {
        if (Date.now() - start > 30_000) throw new Error(`timed out waiting for ${what}; output:\n${out}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    };
    try {
      await seen(/^a: Installing -> Training$/m, 'a training');
      fs.writeFileSync(path.join(dir, 'runs', 'a.yaml'), spec('a', { suspend: true }));
      await seen(/^a: Terminating -> Suspended\b/m, 'a suspended');

      fs.writeFileSync(path.join(dir, 'runs', 'a.yaml'), spec('a', { suspend: false, extra: '  resources: {market: spto}' }));
      await seen(/^runctl: runs\/a\.yaml has errors: runs defined there keep their last valid spec/m, 'the invalid edit reported');
      // The same line `runctl validate` prints for this file.
      const validate = spawn(process.execPath, [path.resolve('bin/runctl.js'), 'validate', 'runs'], { cwd: dir, env: { ...process.env, NO_COLOR: '1' } });
      let validateOut = '';
      validate.stdout.on('data', (d: Buffer) => (validateOut += d.toString()));
      await new Promise((r) => validate.on('close', r));
      const diagnostic = validateOut.split('\n').find((l) => l.startsWith('runs/a.yaml:'))!;
      expect(diagnostic).toMatch(/ error spec\.resources\.market: /);
      expect(out).toContain(diagnostic);
      expect(out).not.toMatch(/^a: Suspended -> /m);

      fs.writeFileSync(path.join(dir, 'runs', 'a.yaml'), spec('a', { suspend: false }));
      await seen(/^runctl: runs\/a\.yaml is valid again$/m, 'the fix noticed');
      await seen(/^a: Suspended -> Provisioning\b/m, 'a resumed');
      await seen(/^a: Installing -> Training$[\s\S]*^a: Installing -> Training$/m, 'a training again');
    } finally {
      child.kill('SIGINT');
    }
    expect(await exited).toBe(0);
    expect(out).toMatch(/runctl: SIGINT: finishing the work in flight, then stopping/);
    expect(out).toMatch(/runctl: stopped; runs keep going on their instances/);
    expect(fs.existsSync(path.join(dir, '.runctl', 'controller.lock'))).toBe(false);
    const world = JSON.parse(fs.readFileSync(path.join(dir, 'world.json'), 'utf8')) as { agents: Record<string, { startStep: number; step: number; phase: string }> };
    // Resumed from the checkpoint taken when it was suspended, and still training after the controller left.
    expect(agentIn(world, 'a', 1, 1)!.phase).toBe('stopped');
    expect(agentIn(world, 'a', 1, 2)!.startStep).toBe(agentIn(world, 'a', 1, 1)!.step);
    expect(agentIn(world, 'a', 1, 2)!.phase).toBe('training');
  });
});
