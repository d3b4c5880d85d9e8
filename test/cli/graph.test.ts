import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';

describe('runctl graph', () => {
  const out = spawnSync(process.execPath, ['bin/runctl.js', 'graph'], { encoding: 'utf8' });

  it('prints the run machine as a Mermaid state diagram with every phase', () => {
    expect(out.status).toBe(0);
    expect(out.stdout.startsWith('stateDiagram-v2\n')).toBe(true);
    for (const phase of ['Pending', 'Provisioning', 'Syncing', 'Installing', 'Training', 'Completed', 'Interrupted', 'Resuming', 'Failed', 'Suspended', 'Terminating']) {
      expect(out.stdout).toContain(phase);
    }
    expect(out.stdout).toContain('Training --> Interrupted : SPOT_NOTICE');
    expect(out.stdout).toContain('Provisioning: Provisioning / launch');
  });

  it('matches the diagram embedded in the README', () => {
    const readme = fs.readFileSync('README.md', 'utf8');
    const embedded = /```mermaid\n([\s\S]*?)```/.exec(readme)?.[1];
    expect(embedded).toBe(out.stdout);
  });
});
