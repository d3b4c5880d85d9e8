// `runctl plan --show-bundle`: what each run's code bundle holds, and the files that reach the
// instance only because code.include asks for them although a .gitignore leaves them out
// (issue 12: nanoGPT ignores *.bin and *.pkl, its prepared data).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const RUNCTL = path.resolve('bin/runctl.js');
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'runctl-show-bundle-'));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

function write(rel: string, text: string | Buffer): void {
  fs.mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
  fs.writeFileSync(path.join(root, rel), text);
}

function runctl(...args: string[]) {
  return spawnSync(process.execPath, [RUNCTL, ...args], { cwd: root, encoding: 'utf8', env: { ...process.env, NO_COLOR: '1', GITHUB_ACTIONS: '' } });
}

describe('runctl plan --show-bundle', () => {
  write('runctl.yaml', 'prune: false\n');
  write('nanogpt/.gitignore', '*.bin\n*.pkl\n');
  write('nanogpt/train.py', 'print(1)\n');
  write('nanogpt/data/shakespeare_char/train.bin', Buffer.alloc(2048));
  write('nanogpt/data/shakespeare_char/meta.pkl', Buffer.alloc(100));
  write(
    'runs/gpt.yaml',
    [
      'apiVersion: runctl.dev/v1alpha1',
      'kind: TrainingRun',
      'metadata: {name: gpt}',
      'spec:',
      '  provider: local',
      '  code: {path: ./nanogpt, include: ["data/**/*.bin", "data/**/*.pkl", "weights/*.pt"]}',
      '  run: python3 train.py',
      '',
    ].join('\n'),
  );

  it('lists the files code.include adds and the patterns that match nothing', () => {
    const text = runctl('plan', '--no-cloud-checks', '--show-bundle', 'runs/');
    expect(text.stderr).toBe('');
    expect(text.status).toBe(0);
    const section = text.stdout.slice(text.stdout.indexOf('Code bundles:'));
    expect(section).toBe(
      [
        'Code bundles:',
        '  gpt: ./nanogpt: 4 files, 2.1 KiB before compression',
        '    shipped only because of code.include: 2 files, 2.1 KiB',
        '      data/shakespeare_char/meta.pkl (100 B)',
        '      data/shakespeare_char/train.bin (2.0 KiB)',
        '    warning: code.include pattern "weights/*.pt" matches no file a .gitignore leaves out',
        '',
      ].join('\n'),
    );

    const json = runctl('plan', '--no-cloud-checks', '--show-bundle', '--format', 'json', 'runs/');
    expect(json.status).toBe(0);
    const doc = JSON.parse(json.stdout) as { bundles: Array<{ run: string; listing: { files: Array<{ path: string; viaInclude: boolean }> } }> };
    expect(doc.bundles[0]?.listing.files.filter((f) => f.viaInclude).map((f) => f.path)).toEqual(['data/shakespeare_char/meta.pkl', 'data/shakespeare_char/train.bin']);
  });
});
