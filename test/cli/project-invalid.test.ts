// An invalid runctl.yaml makes the commands that act refuse to (it names the state store and the
// defaults), with the file, line and field of each error (issue 10, point 10). The real CLI.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const BIN = path.resolve('bin/runctl.js');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'runctl-project-invalid-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('an invalid runctl.yaml', () => {
  it('reconcile, plan and apply refuse to act, naming file, line and field; nothing is started', () => {
    fs.mkdirSync(path.join(dir, 'runs'));
    fs.mkdirSync(path.join(dir, 'code'));
    fs.writeFileSync(path.join(dir, 'code', 'job.py'), 'print(1)\n');
    fs.writeFileSync(
      path.join(dir, 'runs', 'a.yaml'),
      'apiVersion: runctl.dev/v1alpha1\nkind: TrainingRun\nmetadata: {name: a}\nspec:\n  provider: local\n  code: {path: ./code}\n  run: python3 job.py\n',
    );
    fs.writeFileSync(path.join(dir, 'runctl.yaml'), '# project settings\nprune: maybe\n');
    for (const args of [['reconcile', '--once', 'runs'], ['plan', 'runs'], ['apply', 'runs']]) {
      const out = spawnSync(process.execPath, [BIN, ...args], { cwd: dir, encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' } });
      expect(out.status, args.join(' ')).toBe(1);
      expect(out.stderr).toBe(
        'runctl.yaml:2:8 error prune: must be true or false (got "maybe")\n' +
          'runctl: runctl.yaml is invalid, so nothing was done: it names the state store and the defaults, and acting without them ' +
          'could act on the wrong runs; fix the errors above (`runctl validate` checks it) and run again\n',
      );
    }
    expect(fs.existsSync(path.join(dir, '.runctl'))).toBe(false);
  });
});
