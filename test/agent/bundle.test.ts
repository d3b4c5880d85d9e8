// Code bundles: deterministic (content decides the id, not mtimes, owners or modes beyond the
// executable bit), gitignore-aware like git, and never reaching outside the code directory.
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { BundleError, createBundle, listBundle } from '../../src/agent/bundle.js';
import { PYTHON } from './support.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function tree(files: Record<string, string>): string {
  const root = mkdtempSync(path.join(os.tmpdir(), 'runctl-bundle-test-'));
  dirs.push(root);
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(root, name)), { recursive: true });
    writeFileSync(path.join(root, name), text);
  }
  return root;
}

/** Entry names of a bundle, as Python's tarfile (what the agent unpacks with) reads them. */
function entries(file: string): string[] {
  const script = 'import sys, tarfile\nfor m in tarfile.open(sys.argv[1]): print(m.name + ("/" if m.isdir() else "") + (" -> " + m.linkname if m.issym() else "") + " " + oct(m.mode) + " " + str(m.mtime) + " " + str(m.uid))';
  return execFileSync(PYTHON, ['-c', script, file], { encoding: 'utf8' }).trim().split('\n');
}

describe('createBundle', () => {
  it('gives the same id for the same content regardless of mtimes, creation order and write modes', async () => {
    const a = tree({ 'code/train.py': 'print(1)\n', 'code/lib/util.py': 'x = 1\n', 'code/run.sh': 'echo hi\n' });
    const b = tree({ 'code/run.sh': 'echo hi\n', 'code/lib/util.py': 'x = 1\n', 'code/train.py': 'print(1)\n' });
    chmodSync(path.join(a, 'code/run.sh'), 0o755);
    chmodSync(path.join(b, 'code/run.sh'), 0o700);
    chmodSync(path.join(b, 'code/train.py'), 0o600);
    utimesSync(path.join(b, 'code/train.py'), new Date('2001-01-01'), new Date('2001-01-01'));

    const first = await createBundle(a, { path: 'code', exclude: [] });
    const second = await createBundle(b, { path: 'code', exclude: [] });
    const again = await createBundle(a, { path: 'code', exclude: [] });

    expect(second.sha256).toBe(first.sha256);
    expect(again.sha256).toBe(first.sha256);
    expect(first.fileCount).toBe(3);
    expect(first.file).toBe(path.join(a, '.runctl/bundles', `${first.sha256}.tar.gz`));
    expect(first.bytes).toBeGreaterThan(0);
    expect(entries(first.file)).toEqual([
      'lib/ 0o755 0 0',
      'lib/util.py 0o644 0 0',
      'run.sh 0o755 0 0',
      'train.py 0o644 0 0',
    ]);
  });

  it('changes the id when content, a name or the executable bit changes', async () => {
    const root = tree({ 'code/a.txt': 'one\n' });
    const base = (await createBundle(root, { path: 'code', exclude: [] })).sha256;
    writeFileSync(path.join(root, 'code/a.txt'), 'two\n');
    const content = (await createBundle(root, { path: 'code', exclude: [] })).sha256;
    chmodSync(path.join(root, 'code/a.txt'), 0o755);
    const mode = (await createBundle(root, { path: 'code', exclude: [] })).sha256;
    expect(new Set([base, content, mode]).size).toBe(3);
  });

  it('leaves out what .gitignore files (including the repository root one) and code.exclude leave out', async () => {
    const root = tree({
      '.gitignore': '*.log\n',
      'code/.gitignore': '.venv/\ndata/\n!data/keep.csv\nbuild\n',
      'code/train.py': 'x\n',
      'code/run.log': 'noise\n',
      'code/.venv/bin/python': 'binary\n',
      'code/data/big.bin': 'big\n',
      'code/data/keep.csv': 'kept? no: its directory is excluded, as in git\n',
      'code/build': 'a file named build\n',
      'code/sub/.gitignore': '!important.log\nlocal.txt\n',
      'code/sub/important.log': 'deeper rules win\n',
      'code/sub/local.txt': 'ignored by the nested file\n',
      'code/sub/notes.md': 'kept\n',
      'code/secrets/token': 'excluded by the spec\n',
      'code/.git/HEAD': 'never shipped\n',
    });
    const bundle = await createBundle(root, { path: 'code', exclude: ['secrets/'] });
    expect(entries(bundle.file).map((e) => e.split(' ')[0])).toEqual([
      '.gitignore',
      'sub/',
      'sub/.gitignore',
      'sub/important.log',
      'sub/notes.md',
      'train.py',
    ]);
  });

  it('ships what code.include asks for even when a .gitignore leaves it out; code.exclude still wins', async () => {
    // nanoGPT's .gitignore: its prepared data (*.bin, *.pkl) never reached the instance (issue 12).
    const root = tree({
      'code/.gitignore': '*.bin\n*.pkl\n__pycache__/\n.venv/\nout/\n',
      'code/train.py': 'x\n',
      'code/data/shakespeare_char/prepare.py': 'prepare\n',
      'code/data/shakespeare_char/train.bin': 'tokens\n',
      'code/data/shakespeare_char/val.bin': 'val\n',
      'code/data/shakespeare_char/meta.pkl': 'meta\n',
      'code/data/openwebtext/train.bin': 'huge, excluded by the spec\n',
      'code/out/ckpt.bin': 'an ignored folder nothing includes\n',
      'code/.venv/lib/site.bin': 'an ignored folder include patterns cannot reach\n',
      'code/__pycache__/x.pyc': 'ignored\n',
    });
    const code = { path: 'code', exclude: ['data/openwebtext/'], include: ['data/**/*.bin', 'data/*/meta.pkl', 'out/ckpt.bin', 'weights/*.bin'] };
    const bundle = await createBundle(root, code);
    expect(entries(bundle.file).map((e) => e.split(' ')[0])).toEqual([
      '.gitignore',
      'data/',
      'data/shakespeare_char/',
      'data/shakespeare_char/meta.pkl',
      'data/shakespeare_char/prepare.py',
      'data/shakespeare_char/train.bin',
      'data/shakespeare_char/val.bin',
      'out/',
      'out/ckpt.bin',
      'train.py',
    ]);
    expect(bundle.includedOnly).toEqual([
      { path: 'data/shakespeare_char/meta.pkl', bytes: 5 },
      { path: 'data/shakespeare_char/train.bin', bytes: 7 },
      { path: 'data/shakespeare_char/val.bin', bytes: 4 },
      { path: 'out/ckpt.bin', bytes: 35 },
    ]);
    expect(bundle.includeUnmatched).toEqual(['weights/*.bin']);
    const listing = await listBundle(root, code);
    expect(listing.files.map((f) => f.path)).toEqual(['.gitignore', 'data/shakespeare_char/meta.pkl', 'data/shakespeare_char/prepare.py', 'data/shakespeare_char/train.bin', 'data/shakespeare_char/val.bin', 'out/ckpt.bin', 'train.py']);
    expect(listing.fileCount).toBe(bundle.fileCount);
    expect(listing.contentBytes).toBe(bundle.contentBytes);
    // Without include the bundle is what it always was (same id as a spec that never had the field).
    const plain = await createBundle(root, { path: 'code', exclude: ['data/openwebtext/'] });
    const empty = await createBundle(root, { path: 'code', exclude: ['data/openwebtext/'], include: [] });
    expect(empty.sha256).toBe(plain.sha256);
    expect(plain.includedOnly).toEqual([]);
    expect(entries(plain.file).map((e) => e.split(' ')[0])).toEqual(['.gitignore', 'data/', 'data/shakespeare_char/', 'data/shakespeare_char/prepare.py', 'train.py']);
  });

  it('keeps symlinks that stay inside the tree and skips those that lead out of it', async () => {
    const root = tree({ 'code/real/config.yaml': 'a: 1\n', 'outside.txt': 'private\n' });
    symlinkSync('real/config.yaml', path.join(root, 'code/config.yaml'));
    symlinkSync('../outside.txt', path.join(root, 'code/escape.txt'));
    symlinkSync('/etc/passwd', path.join(root, 'code/absolute'));
    const bundle = await createBundle(root, { path: 'code', exclude: [] });
    expect(bundle.skippedSymlinks).toEqual(['absolute', 'escape.txt']);
    expect(entries(bundle.file)).toEqual(['config.yaml -> real/config.yaml 0o777 0 0', 'real/ 0o755 0 0', 'real/config.yaml 0o644 0 0']);
    expect(readFileSync(bundle.file).includes(Buffer.from('private'))).toBe(false);
  });

  it('stores long and non-ASCII paths faithfully', async () => {
    const long = `${'deep/'.repeat(30)}file-${'x'.repeat(120)}.txt`;
    const root = tree({ [`code/${long}`]: 'long\n', 'code/données/modèle.txt': 'utf8\n' });
    const bundle = await createBundle(root, { path: 'code', exclude: [] });
    const names = entries(bundle.file).map((e) => e.split(' ')[0]);
    expect(names).toContain(long);
    expect(names).toContain('données/modèle.txt');
  });

  it('names the problem when code.path is not a directory', async () => {
    const root = tree({ 'file.txt': 'x' });
    await expect(createBundle(root, { path: 'missing', exclude: [] })).rejects.toThrow(BundleError);
    await expect(createBundle(root, { path: 'file.txt', exclude: [] })).rejects.toThrow(/code\.path "file\.txt" is not a directory/);
  });
});
