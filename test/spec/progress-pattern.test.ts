// spec.progress.pattern: ECMAScript patterns translated to Python `re` with the same meaning, and
// refused (with the character) where that cannot be promised. The translations are run by the
// real python3 on the same lines ECMAScript matches, so a difference in meaning fails here.
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { ProgressPatternError, translateProgressPattern } from '../../src/spec/progress-pattern.js';
import { PYTHON } from '../agent/support.js';

const NANOGPT = 'iter (?<step>\\d+): loss (?<loss>[\\d.]+), time (?<time_ms>[\\d.]+)ms';

/** Each pattern with lines; Python's match groups must equal ECMAScript's for every line. */
const CASES: [string, string[]][] = [
  [NANOGPT, ['iter 10: loss 3.1234, time 12.34ms, mfu 1.23%', 'step 100: train loss 2.9', 'iter x: loss 1']],
  ['^step (?<step>\\d+)/(?<total>\\d+)$', ['step 3/10', 'step 3/10\n', ' step 3/10']],
  ['(?<step>\\d+)\\s+(?<loss>\\S+)', ['12\u00a0 0.5', '12\u2003x', '7 \tnan']],
  ['e(?<step>\\d+).(?<loss>\\w+)', ['e5\u2028x', 'e5 ab', 'e5\u00e9z', 'e5-é']],
  ['\\bstep=(?<step>[0-9]{1,6}?)(?:,|$)(?=\\s|$)', ['step=12,', 'global_step=12,', 'step=1234567 ']],
  ['[^\\d\\s](?<step>\\d+)|x(?<loss>[\\-+.\\d]+)', ['a12', ' 12', 'x-1.5', '\u00a012']],
  ['(?<step>\\d+)[\\u00e9\\x41-\\x43\\u{1F600}]', ['3é', '3B', '3😀', '3D']],
  ['(?<step>\\d+)(?:ab)*[]?x[^]', ['3ababx\n', '3x']],
];

function pythonMatches(python: string, lines: string[]): unknown[] {
  const code = [
    'import json, re, sys',
    'p = re.compile(sys.argv[1], re.ASCII)',
    'out = []',
    'for line in json.loads(sys.stdin.read()):',
    '    m = p.search(line)',
    '    out.append(m.groupdict() if m else None)',
    'print(json.dumps(out))',
  ].join('\n');
  const r = spawnSync(PYTHON, ['-c', code, python], { input: JSON.stringify(lines), encoding: 'utf8' });
  expect(r.stderr).toBe('');
  return JSON.parse(r.stdout) as unknown[];
}

function jsMatches(source: string, lines: string[]): unknown[] {
  const re = new RegExp(source, 'u');
  return lines.map((line) => {
    const m = re.exec(line);
    if (!m) return null;
    return Object.fromEntries(Object.entries(m.groups ?? {}).map(([k, v]) => [k, v ?? null]));
  });
}

function refusal(source: string): ProgressPatternError {
  try {
    translateProgressPattern(source);
  } catch (err) {
    if (err instanceof ProgressPatternError) return err;
    throw err;
  }
  throw new Error(`${source} was accepted`);
}

describe('translateProgressPattern', () => {
  it('gives Python the same matches as ECMAScript on every line', () => {
    for (const [source, lines] of CASES) {
      const { python, groups } = translateProgressPattern(source);
      expect(groups).toContain('step');
      expect(pythonMatches(python, lines), `${source} -> ${python}`).toEqual(jsMatches(source, lines));
    }
  });

  it('names the group a metric pattern has', () => {
    expect(translateProgressPattern(NANOGPT)).toEqual({
      python: 'iter\\ (?P<step>\\d+)\\:\\ loss\\ (?P<loss>[\\d\\.]+)\\,\\ time\\ (?P<time_ms>[\\d\\.]+)ms',
      groups: ['step', 'loss', 'time_ms'],
    });
  });

  it.each([
    ['iter (?<step>\\d+', 'a group opened here is not closed', 5],
    ['iter (?<=x)(?<step>\\d+)', 'lookbehind is not supported', 5],
    ['(?<step>\\d+) (\\w+) \\1', 'backreferences (\\1) are not supported', 19],
    ['(?<step>\\d+)\\k<step>', 'backreferences (\\k<name>) are not supported', 12],
    ['(?<step>\\d+) \\p{L}', 'Unicode property escapes', 13],
    ['(?:(?<step>\\d+) )+', 'the named group "step" is inside a repeated group', 6],
    ['(?<step>\\d+) (?<step>\\d+)', 'the group name "step" is used twice', 16],
    ['(?<st-ep>\\d+)', 'the group name "st-ep" is not letters', 3],
    ['(?<step>\\d+) a{2', 'a "{" that does not start a repetition', 14],
    ['(?<step>\\d+) [a', 'a character class opened here is not closed', 13],
    ['(?<step>\\d+) [z-a]', 'a range whose ends are out of order', 14],
    ['(?<step>\\d+) \\a', '"\\a" is not an escape', 13],
    ['(?<step>\\d+)|*', 'nothing to repeat', 13],
    ['(?<step>\\d+))', 'unmatched ")"', 12],
    ['loss (?<loss>[\\d.]+)', 'has no named group "step"', 20],
  ])('refuses %s: %s at character %i', (source, reason, index) => {
    const err = refusal(source);
    expect(err.message).toContain(reason);
    expect(err.index).toBe(index);
    expect(err.message).toContain(`at character ${index + 1} of the pattern`);
  });
});
