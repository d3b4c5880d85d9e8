// The CI workflow and the systemd unit in examples/ only use commands and options runctl has:
// every `runctl …` line in them parses with the real command tree.
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { buildProgram } from '../../src/cli/main.js';
import type { Command } from 'commander';

function runctlLines(text: string): string[] {
  return text
    .replace(/\\\n\s*/g, ' ')
    .split('\n')
    .map((l) => /^\s*(?:\S+=\S+\s+)*runctl ((?:validate|plan|apply|reconcile|status|describe)\b.*)$/.exec(l)?.[1])
    .filter((l): l is string => l !== undefined)
    .map((l) => l.replace(/\s*[>|;].*$/, '').trim());
}

/** Every --option of the line is one the command declares. */
function unknownOptions(line: string): string[] {
  const [name, ...words] = line.split(/\s+/);
  const cmd = buildProgram().commands.find((c: Command) => c.name() === name);
  if (!cmd) return [`no command ${name}`];
  const known = new Set(cmd.options.flatMap((o) => [o.long, o.short].filter(Boolean) as string[]));
  return words.filter((w) => w.startsWith('-')).filter((w) => !known.has(w.split('=')[0]!));
}

describe('examples', () => {
  it('github-actions.yml is a workflow whose runctl steps use real options', () => {
    const text = fs.readFileSync('examples/ci/github-actions.yml', 'utf8');
    const workflow = parse(text) as { jobs: Record<string, { steps: Array<{ run?: string }> }> };
    expect(Object.keys(workflow.jobs)).toEqual(['validate', 'plan', 'apply']);
    const scripts = Object.values(workflow.jobs).flatMap((j) => j.steps.map((s) => s.run ?? ''));
    const lines = runctlLines(scripts.join('\n'));
    expect(lines.map((l) => l.split(' ')[0])).toEqual(['validate', 'plan', 'apply']);
    for (const line of lines) expect(unknownOptions(line), line).toEqual([]);
    expect(lines[0]).toContain('--format github');
    expect(lines[1]).toContain('--detailed-exitcode');
    expect(lines[2]).toContain('--state');
  });

  it('runctl.service runs reconcile --watch --pull-interval with real options and restarts always', () => {
    const text = fs.readFileSync('examples/systemd/runctl.service', 'utf8');
    const lines = runctlLines(text.split('\n').filter((l) => !l.startsWith('#')).join('\n'));
    expect(lines).toHaveLength(1);
    expect(unknownOptions(lines[0]!)).toEqual([]);
    expect(lines[0]).toMatch(/^reconcile --watch .*--pull-interval 1m/);
    expect(text).toMatch(/^Restart=always$/m);
    expect(text).toMatch(/^NoNewPrivileges=yes$/m);
  });
});
