// Random mutations of valid specs: the loader never throws, every problem has a position inside
// the file, and every run it returns is one the schema accepts.
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parse, parseAllDocuments, stringify } from 'yaml';
import { fastParse } from '../../src/spec/fast-parse.js';
import { loadRuns } from '../../src/spec/load.js';
import { findStructureProblems, isEmptyDocument, parseYaml } from '../../src/spec/yaml-document.js';
import { trainingRunValidator } from '../../src/spec/validators.js';
import { FIXTURES, NO_PROJECT, tempRepo } from './helpers.js';

const repo = tempRepo();
const FILE = path.join(repo.root, 'runs/mutant.yaml');
repo.write('runs/mutant.yaml', '');

const SEEDS = ['minimal-local.yaml', 'full-aws.yaml', 'anchors.yaml', 'local-with-warnings.yaml'].map((name) =>
  readFileSync(path.join(FIXTURES, 'valid', name), 'utf8').replaceAll('./test/fixtures/code/trainer', './code').replace('test/fixtures/code/trainer/', 'code/'),
);

async function check(text: string): Promise<void> {
  writeFileSync(FILE, text);
  const result = await loadRuns([FILE], { repoRoot: repo.root, project: NO_PROJECT });
  const lines = text.split('\n').length;
  for (const d of result.diagnostics) {
    expect(d.line, JSON.stringify(d)).toBeGreaterThanOrEqual(1);
    expect(d.column, JSON.stringify(d)).toBeGreaterThanOrEqual(1);
    expect(d.line, JSON.stringify(d)).toBeLessThanOrEqual(lines);
    expect(d.message.length).toBeGreaterThan(0);
  }
  const validate = trainingRunValidator();
  for (const { run } of result.runs) expect(validate(structuredClone(run)), JSON.stringify(validate.errors)).toBe(true);
  if (!result.diagnostics.some((d) => d.severity === 'error')) expect(result.runs.length).toBeGreaterThan(0);
}

const yamlish = fc.constantFrom(...':-[]{}&*!|>\'"%@`#,?\t\n '.split(''), 'ssm:/', '---', '<<: ', '*a', '&a ', '0x1F', '~', 'null', 'true', 'yes', '1e3', '90s');
const insertion = fc.oneof(yamlish, fc.string({ maxLength: 8 }), fc.string({ unit: 'binary', maxLength: 4 }));

const textMutation = fc.oneof(
  fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), text: insertion }),
  fc.record({ kind: fc.constant('delete' as const), at: fc.nat(), length: fc.integer({ min: 1, max: 12 }) }),
  fc.record({ kind: fc.constant('swap-lines' as const), a: fc.nat(), b: fc.nat() }),
  fc.record({ kind: fc.constant('indent' as const), line: fc.nat(), by: fc.integer({ min: -4, max: 4 }) }),
  fc.record({ kind: fc.constant('duplicate-line' as const), line: fc.nat() }),
);
type TextMutation = typeof textMutation extends fc.Arbitrary<infer T> ? T : never;

function applyText(text: string, m: TextMutation): string {
  const lines = text.split('\n');
  switch (m.kind) {
    case 'insert': {
      const at = m.at % (text.length + 1);
      return text.slice(0, at) + m.text + text.slice(at);
    }
    case 'delete': {
      const at = m.at % (text.length + 1);
      return text.slice(0, at) + text.slice(at + m.length);
    }
    case 'swap-lines': {
      const a = m.a % lines.length;
      const b = m.b % lines.length;
      [lines[a], lines[b]] = [lines[b] as string, lines[a] as string];
      return lines.join('\n');
    }
    case 'indent': {
      const i = m.line % lines.length;
      const line = lines[i] as string;
      lines[i] = m.by >= 0 ? ' '.repeat(m.by) + line : line.replace(new RegExp(`^ {0,${-m.by}}`), '');
      return lines.join('\n');
    }
    case 'duplicate-line': {
      const i = m.line % lines.length;
      lines.splice(i, 0, lines[i] as string);
      return lines.join('\n');
    }
  }
}

/** Paths to every node of a parsed spec, to pick one to change. */
function paths(value: unknown, at: Array<string | number> = []): Array<Array<string | number>> {
  const out = [at];
  if (Array.isArray(value)) value.forEach((v, i) => out.push(...paths(v, [...at, i])));
  else if (value && typeof value === 'object') for (const [k, v] of Object.entries(value)) out.push(...paths(v, [...at, k]));
  return out;
}

const jsonValue = fc.oneof(
  fc.jsonValue({ maxDepth: 2 }),
  fc.constantFrom('spto', 'us-east1', '5 minutes', '0s', '40d', 'g5-xlarge', 's3://Bad_Bucket', 'file://x', 'ami-xyz', 'plain-secret', '../..', '/', 'My_Run', -1, 0, 1e9, 2.5),
);

const dataMutation = fc.record({
  kind: fc.constantFrom('set', 'delete', 'add'),
  pick: fc.nat(),
  value: jsonValue,
  key: fc.oneof(fc.constantFrom('region', 'market', 'instnceTypes', 'spec', 'run', '<<', 'RUNCTL_X', 'MY-VAR'), fc.string({ maxLength: 6 })),
});

function applyData(doc: unknown, m: typeof dataMutation extends fc.Arbitrary<infer T> ? T : never): unknown {
  const all = paths(doc);
  const target = all[m.pick % all.length] as Array<string | number>;
  if (target.length === 0) return m.kind === 'set' ? m.value : doc;
  const parent = target.slice(0, -1).reduce<unknown>((node, k) => (node as Record<string | number, unknown>)[k], doc) as Record<string | number, unknown>;
  const last = target[target.length - 1] as string | number;
  if (m.kind === 'set') parent[last] = m.value;
  else if (m.kind === 'delete') {
    if (Array.isArray(parent)) parent.splice(Number(last), 1);
    else delete parent[last];
  } else {
    const node = parent[last];
    if (node && typeof node === 'object' && !Array.isArray(node)) (node as Record<string, unknown>)[m.key] = m.value;
  }
  return doc;
}

describe('mutated specs', () => {
  it('edited as text: never throw, every problem positioned', async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...SEEDS), fc.array(textMutation, { minLength: 1, maxLength: 4 }), async (seed, mutations) => {
        await check(mutations.reduce(applyText, seed));
      }),
      { numRuns: 300 },
    );
  });

  it('edited as data: never throw, every problem positioned, every returned run schema-valid', async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...SEEDS), fc.array(dataMutation, { minLength: 1, maxLength: 3 }), async (seed, mutations) => {
        const doc = mutations.reduce(applyData, parse(seed) as unknown);
        await check(stringify(doc, { aliasDuplicateObjects: false }));
      }),
      { numRuns: 300 },
    );
  });
});

/** What the yaml package (the authority) makes of `text`, when it is one clean document. */
function authoritative(text: string): { ok: true; value: unknown } | { ok: false } {
  const { documents, lineCounter } = parseYaml(text);
  const docs = documents.filter((d) => !isEmptyDocument(d) || d.errors.length > 0);
  if (docs.length !== 1) return { ok: false };
  const doc = docs[0]!;
  if (doc.errors.length > 0 || doc.warnings.length > 0 || findStructureProblems(doc, lineCounter).problems.length > 0) return { ok: false };
  try {
    return { ok: true, value: doc.toJS({ maxAliasCount: 100 }) };
  } catch {
    return { ok: false };
  }
}

function agrees(text: string): void {
  const fast = fastParse(text);
  if (fast === undefined) return;
  const full = authoritative(text);
  expect(full.ok, `the fast path accepted what the yaml package refuses:\n${text}`).toBe(true);
  // -0 and 0 differ only to Object.is; every check (and JSON) treats them alike.
  if (full.ok) expect(JSON.parse(JSON.stringify(fast)), text).toStrictEqual(JSON.parse(JSON.stringify(full.value)));
}

const scalarish = fc.constantFrom(
  '~', 'null', 'Null', 'NULL', 'true', 'True', 'FALSE', 'yes', 'no', 'on', 'off', 'y', 'n',
  '0', '-0', '+1', '007', '0o17', '0x1F', '0b101', '1_000', '1e3', '1.5', '.5', '5.', '.inf', '-.Inf', '.nan',
  '2024-01-01', '12:30:00', '1:20', '"quoted"', "'single'", '"esc\\t\\u00e9"', "'it''s'", '|\n  block\n', '>-\n  folded\n  text\n',
  'a: b', '- x', '[a, b]', '{a: 1}', '? [A]', '[A]', '{a: b}', '&x', '*x', '!!str 1', '<<', '"a\\\nb"', '# c', 'plain # c', 'a:b', '-', '?',
);

describe('the fast path', () => {
  it('accepts only what the yaml package reads the same way (mutated specs)', () => {
    fc.assert(
      fc.property(fc.constantFrom(...SEEDS), fc.array(textMutation, { minLength: 1, maxLength: 4 }), (seed, mutations) => {
        agrees(mutations.reduce(applyText, seed));
      }),
      { numRuns: 1000 },
    );
  });

  it('accepts only what the yaml package reads the same way (keys and values in every YAML spelling)', () => {
    const entry = fc.tuple(fc.oneof(scalarish, fc.string({ maxLength: 5 })), fc.oneof(scalarish, fc.string({ maxLength: 5 })));
    fc.assert(
      fc.property(fc.array(entry, { minLength: 1, maxLength: 4 }), fc.constantFrom('', '  ', '- '), (entries, indent) => {
        const text = entries.map(([k, v]) => `${indent}${k}: ${v}`).join('\n') + '\n';
        agrees(text);
        agrees(`spec:\n  env:\n${entries.map(([k, v]) => `    ${k}: ${v}`).join('\n')}\n`);
        agrees(`[${entries.map(([k, v]) => `${k}, ${v}`).join(', ')}]\n`);
        agrees(`{${entries.map(([k, v]) => `${k}: ${v}`).join(', ')}}\n`);
      }),
      { numRuns: 3000 },
    );
  });

  it('accepts only what the yaml package reads the same way (random line layouts)', () => {
    const word = fc.oneof(scalarish, fc.constantFrom('a', 'b', 'run', 'env', 'x y', 'ssm:/a', 'http://h:1/p', 'a: b', 'a #b', "it's", '"', "'"));
    const line = fc.tuple(
      fc.integer({ min: 0, max: 6 }),
      fc.constantFrom(
        'k: v', '- v', '- k: v', 'k:', 'k: |', 'k: >-', '- |', 'k: |2', 'k: >+', 'v', 'k: [v, v]', 'k: {k: v}', '[v]', '- [v, {k: v}]', '# c',
        'k: v # c', 'k: "v"', "k: 'v'", '? k', ': v', '---', '...', '', '- - v', '-', '- k:', 'k: - v', '"k": v', "'k': v", 'k: v: v', 'k: [v,', 'v]',
      ),
      word,
      word,
    );
    fc.assert(
      fc.property(fc.array(line, { minLength: 1, maxLength: 8 }), (lines) => {
        const text = lines
          .map(([indent, shape, k, v]) => ' '.repeat(indent) + shape.replace(/k/g, () => (k.includes('\n') ? 'key' : k)).replace(/v/g, () => (v.includes('\n') ? 'val' : v)))
          .join('\n');
        agrees(`${text}\n`);
      }),
      { numRuns: 3000 },
    );
  });

  it('takes documents written out by the yaml package in any style', () => {
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 3 }), fc.record({ flow: fc.boolean(), quote: fc.boolean(), width: fc.integer({ min: 20, max: 80 }) }), (value, o) => {
        const text = stringify(value, { collectionStyle: o.flow ? 'flow' : 'block', singleQuote: o.quote, lineWidth: o.width, minContentWidth: 10 });
        agrees(text);
      }),
      { numRuns: 1000 },
    );
  });
});
