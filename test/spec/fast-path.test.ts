// The fast path (js-yaml, no positions) may only take documents the yaml package reads the same
// way; everything else goes to the full parser. The differential property tests are in
// property.test.ts; these are the cases each guard exists for.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { fastParse } from '../../src/spec/fast-parse.js';
import { FIXTURES, REPO_ROOT } from './helpers.js';

describe('fastParse', () => {
  it.each(['minimal-local.yaml', 'full-aws.yaml', 'local-with-warnings.yaml'])('takes the valid fixture %s, reading what yaml reads', (name) => {
    const text = readFileSync(path.join(FIXTURES, 'valid', name), 'utf8');
    expect(fastParse(text)).toEqual(parse(text));
  });

  it('takes the shipped quickstart', () => {
    const text = readFileSync(path.join(REPO_ROOT, 'runs/quickstart.yaml'), 'utf8');
    expect(fastParse(text)).toEqual(parse(text));
  });

  it.each([
    ['several documents', 'a: 1\n---\nb: 2\n'],
    ['a directive', '%YAML 1.1\n---\nsuspend: yes\n'],
    ['a tag', 'a: !!binary aGVsbG8=\n'],
    ['an anchor (so aliases, and alias bombs)', 'a: &x [1, 2]\nb: *x\n'],
    ['an explicit key', '? a\n: 1\n'],
    ['a list as a key', '[a]: 1\n'],
    ['a key that reads as null', 'env:\n  ~: x\n'],
    ['a key that reads as a number', 'labels:\n  0x1F: x\n'],
    ['a merge key', 'a:\n  <<: {b: 1}\n'],
    ['a quoted scalar over two lines', 'a: "one\n  two"\n'],
    ['a flow collection over two lines', 'a: {b: 1,\n  c: 2}\n'],
    ['a plain scalar over two lines', 'run: python train.py\n  --epochs 20\n'],
    ['a comment glued to a bracket', 'a: [1]#c\n'],
    ['a tab', 'a:\tb\n'],
    ['CRLF line ends', 'a: 1\r\nb: 2\r\n'],
    ['a document that is not a mapping', '- a\n- b\n'],
  ])('leaves %s to the full parser', (_why, text) => {
    expect(fastParse(text)).toBeUndefined();
  });

  it('reads YAML 1.1 spellings as the strings YAML 1.2 makes of them', () => {
    const text = 'a: {binary: 0b101, underscores: 1_000, sexagesimal: 1:20, yes: yes}\n';
    expect(fastParse(text)).toEqual({ a: { binary: '0b101', underscores: '1_000', sexagesimal: '1:20', yes: 'yes' } });
    expect(fastParse(text)).toEqual(parse(text));
  });

  it('reads block scalars and the YAML 1.2 core scalars like the yaml package', () => {
    const text = [
      'run: |',
      '  python train.py \\',
      '    --lr 0.1   # not a comment in a block scalar',
      '  echo "done: [ok"',
      'setup: >-',
      '  pip install',
      '  torch',
      'values: [~, null, true, False, 0o17, 0x1F, +1, 007, 1.5, .5, 1e3, yes, no, on, 1_000, 2024-01-01]',
      'quoted: ["a # b", \'it\'\'s\', "tab\\there"]',
      'url: http://host:8080/path#frag',
      '',
    ].join('\n');
    expect(fastParse(text)).toEqual(parse(text));
  });
});
