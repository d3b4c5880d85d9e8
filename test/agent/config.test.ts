import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { agentCommand, agentScriptPath, renderAgentConfig } from '../../src/agent/config.js';
import { bundleKey } from '../../src/agent/layout.js';
import { testSpec } from '../support/runs.js';

const base = {
  key: { run: 'demo', generation: 3, attempt: 1 },
  storage: 's3://bucket/runctl',
  bundleKey: bundleKey('a'.repeat(64)),
  stateDir: '/opt/runctl/runs/demo/g3/a1/state',
  workDir: '/opt/runctl/runs/demo/g3/a1/work',
};

describe('renderAgentConfig', () => {
  it('takes what runs and how it is supervised from the spec', () => {
    const spec = testSpec({
      setup: 'pip install -r requirements.txt',
      run: 'python train.py',
      env: { WANDB_MODE: 'offline' },
      secrets: { HF_TOKEN: 'ssm:/team/hf-token' },
      resources: { region: 'us-east-1' },
      checkpoints: { dir: '/opt/ckpt', syncInterval: '5m', keep: 4, signal: 'SIGUSR1', signalScope: 'group', gracePeriod: '1m30s' },
    });
    const config = renderAgentConfig({ ...base, spec });
    expect(config).toEqual({
      run: 'demo',
      generation: 3,
      attempt: 1,
      resuming: false,
      storage: 's3://bucket/runctl',
      bundleKey: `bundles/${'a'.repeat(64)}.tar.gz`,
      stateDir: base.stateDir,
      workDir: base.workDir,
      checkpointDir: '/opt/ckpt',
      setup: 'pip install -r requirements.txt',
      command: 'python train.py',
      env: { WANDB_MODE: 'offline' },
      secrets: { HF_TOKEN: 'ssm:/team/hf-token' },
      syncIntervalSeconds: 300,
      keep: 4,
      signal: 'SIGUSR1',
      signalScope: 'group',
      gracePeriodSeconds: 90,
      imdsUrl: 'http://169.254.169.254',
      heartbeatSeconds: 10,
      noticePollSeconds: 2,
      region: 'us-east-1',
    });
  });

  it('resumes on later attempts and from a seed generation; local storage heartbeats faster', () => {
    const spec = testSpec();
    expect(renderAgentConfig({ ...base, spec, key: { ...base.key, attempt: 2 } }).resuming).toBe(true);
    const seeded = renderAgentConfig({ ...base, spec, seedGeneration: 2 });
    expect(seeded).toMatchObject({ resuming: true, seedGeneration: 2 });
    const local = renderAgentConfig({ ...base, spec, storage: 'file:///tmp/store', checkpointDir: '/tmp/sandbox/ckpt', imdsUrl: 'http://127.0.0.1:9' });
    expect(local).toMatchObject({ heartbeatSeconds: 1, checkpointDir: '/tmp/sandbox/ckpt', imdsUrl: 'http://127.0.0.1:9' });
    expect(local.setup).toBeUndefined();
  });

  it('gives the agent setup in either form, with the cache paths and key files normalized', () => {
    const cached = testSpec({ setup: { run: 'bash setup.sh', cache: { paths: ['./.venv/', 'build//lib'], key: ['./requirements.txt'] } } });
    const config = renderAgentConfig({ ...base, spec: cached });
    expect(config.setup).toBe('bash setup.sh');
    expect(config.setupCache).toEqual({ paths: ['.venv', 'build/lib'], key: ['requirements.txt'] });
    const plain = renderAgentConfig({ ...base, spec: testSpec({ setup: 'pip install torch' }) });
    expect(plain.setup).toBe('pip install torch');
    expect(plain.setupCache).toBeUndefined();
  });

  it('gives the agent spec.progress.pattern translated to Python', () => {
    const spec = testSpec({ progress: { pattern: '^iter (?<step>\\d+): loss (?<loss>[\\d.]+)$' } });
    expect(renderAgentConfig({ ...base, spec }).progressPattern).toBe('^iter\\ (?P<step>\\d+)\\:\\ loss\\ (?P<loss>[\\d\\.]+)\\Z');
    expect(renderAgentConfig({ ...base, spec: testSpec() }).progressPattern).toBeUndefined();
  });

  it('rejects relative paths, unknown storage schemes and bad durations with the field named', () => {
    const spec = testSpec();
    expect(() => renderAgentConfig({ ...base, spec, workDir: 'work' })).toThrow(/workDir must be an absolute path/);
    expect(() => renderAgentConfig({ ...base, spec, storage: 'gs://bucket' })).toThrow(/file:\/\/\/absolute\/path or s3:\/\/bucket\/prefix/);
    expect(() => renderAgentConfig({ ...base, spec: testSpec({ checkpoints: { syncInterval: 'soon' } }) })).toThrow(/spec\.checkpoints\.syncInterval: invalid duration "soon"/);
  });
});

describe('agentScriptPath', () => {
  it('finds the agent zipapp shipped in the package, and it runs', () => {
    const script = agentScriptPath();
    expect(existsSync(script)).toBe(true);
    expect(script.endsWith(path.join('dist', 'agent', 'runctl-agent.pyz'))).toBe(true);
    expect(execFileSync('python3', [script, '--help'], { encoding: 'utf8' })).toMatch(/--config CONFIG/);
    expect(agentCommand('/x/config.json', { detach: true })).toEqual(['python3', script, '--config', '/x/config.json', '--detach']);
  });

  it('resolves to the same script from the built dist/ module', async () => {
    const built = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../../dist/agent/config.js');
    const mod = (await import(built)) as { agentScriptPath: () => string };
    expect(mod.agentScriptPath()).toBe(agentScriptPath());
  });
});
