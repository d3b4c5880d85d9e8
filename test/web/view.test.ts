// The dashboard's JSON (src/web/view.ts), its filters and its --listen rule, without a server:
// what the page is given for a run interrupted once, that no secret value reaches it, and which
// addresses it refuses.
import { describe, expect, it } from 'vitest';
import { filterRuns } from '../../src/web/server.js';
import { parseDashboardAddress } from '../../src/web/listen.js';
import { runDetail, runSummary, type SeriesView } from '../../src/web/view.js';
import { eventFixture, statusFixture, T0 } from '../state/status-fixture.js';
import { testSpec } from '../support/runs.js';

const at = (s: number) => new Date(T0 + s * 1000).toISOString();

describe('dashboard view', () => {
  const status = statusFixture('bert', {
    phase: 'Completed',
    attempt: 2,
    interruptions: 1,
    instances: [
      { id: 'i-1', type: 'g5.xlarge', market: 'spot', zone: 'us-east-1a', launchedAt: at(0), generation: 1, attempt: 1, endedAt: at(40), endReason: 'spot interruption', costUSD: 0.12 },
      { id: 'i-2', type: 'g6.xlarge', market: 'spot', zone: 'us-east-1b', launchedAt: at(45), generation: 1, attempt: 2, endedAt: at(90), endReason: 'completed', costUSD: 0.2 },
    ],
    costUSD: 0.32,
    spec: testSpec({ env: { MLFLOW_TRACKING_URI: 'https://alice:s3cret-token@mlflow.example.com' }, secrets: { HF_TOKEN: 'ssm:/team/hf-token' }, budget: { maxCostUSD: 5 } }),
    conditions: [{ type: 'CheckpointSyncStalled', status: 'True', reason: 'CheckpointSyncStalled', message: 'pushing to https://bob:hunter2@example.com stalled', lastTransitionTime: at(50) }],
  });
  const events = [
    eventFixture('bert', 1, { at: at(1), action: 'Pending -> Provisioning' }),
    eventFixture('bert', 2, { at: at(5), action: 'Provisioning -> Training' }),
    eventFixture('bert', 3, { at: at(30), action: 'Training -> Interrupted', message: 'Server.SpotInstanceTermination' }),
    eventFixture('bert', 4, { at: at(46), attempt: 2, action: 'Resuming -> Provisioning' }),
    eventFixture('bert', 5, { at: at(60), attempt: 2, action: 'Installing -> Training' }),
    eventFixture('bert', 6, { at: at(88), attempt: 2, action: 'Training -> Completed', message: 'git pull https://carol:ghp_abc@github.com failed' }),
  ];
  const point = (s: number, step: number, loss: number) => ({ time: at(s), step, total: 100, metrics: { loss } });
  const history: SeriesView[] = [
    { generation: 1, attempt: 1, points: [point(10, 10, 2.0), point(20, 30, 1.5), point(29, 42, 1.2), point(35, 44, 1.1)] },
    { generation: 1, attempt: 2, points: [point(62, 41, 1.21), point(80, 100, 0.4)] },
  ];
  const detail = runDetail({ status, labels: { team: 'nlp' }, events, history, log: { generation: 1, attempt: 2, lines: ['token https://dave:pw1@host/x'] }, now: T0 + 100_000 });

  it('marks the interruption at the last step the attempt recorded and the resume at the step training restarted from', () => {
    expect(detail.markers.map((m) => [m.kind, m.attempt, m.step])).toEqual([
      ['interrupted', 1, 44],
      ['resumed', 2, 41],
      ['completed', 2, 100],
    ]);
  });

  it("adds the ledger's recovery time and steps redone to the interruption, and prices attempts from it", () => {
    const ledger = {
      attempts: [
        { generation: 1, attempt: 1, costUSD: 0.15 },
        { generation: 1, attempt: 2, costUSD: 0.25 },
      ],
      interruptions: [{ generation: 1, attempt: 1, nextAttempt: 2, noticedAt: at(30), recoverySeconds: 30.4, stepsRedone: 3 }],
      costUSD: 0.4,
      unknown: [],
      recoverySeconds: 30.4,
      stepsRedone: 3,
    };
    const d = runDetail({ status: { ...status, ledger }, labels: {}, events, history, log: null, now: T0 });
    expect(d.markers[0]!.message).toBe('attempt 1 interrupted (Server.SpotInstanceTermination); training again 30s after the notice, 3 steps redone');
    expect(d.attempts.map((a) => a.costUSD)).toEqual([0.15, 0.25]);
  });

  it('puts every attempt on the timeline with the phases its transitions entered', () => {
    expect(detail.attempts.map((a) => [a.attempt, a.instanceId, a.start, a.end, a.phases.map((p) => p.phase)])).toEqual([
      [1, 'i-1', at(0), at(40), ['Provisioning', 'Training', 'Interrupted']],
      [2, 'i-2', at(45), at(90), ['Provisioning', 'Training', 'Completed']],
    ]);
    expect(detail.attempts[0]!.phases[2]).toEqual({ phase: 'Interrupted', start: at(30), end: at(40) });
  });

  it('shows cost against the budget and trouble conditions as warnings', () => {
    expect(detail).toMatchObject({ costUSD: 0.32, budgetUSD: 5, warnings: ['CheckpointSyncStalled'], labels: { team: 'nlp' } });
  });

  it('never carries a secret value: env and secrets by name, credentials in URLs masked', () => {
    const json = JSON.stringify(detail);
    for (const secret of ['s3cret-token', 'hunter2', 'ghp_abc', 'pw1', 'ssm:/team/hf-token', 'mlflow.example.com']) expect(json).not.toContain(secret);
    expect(detail.spec).toContainEqual(['Env', 'MLFLOW_TRACKING_URI']);
    expect(detail.spec).toContainEqual(['Secrets', 'HF_TOKEN']);
    expect(json).toContain('https://***@example.com');
    expect(JSON.stringify(runSummary(status, {}))).not.toContain('s3cret');
  });

  it('filters runs by phase and label as the table does', () => {
    const runs = [runSummary(status, { team: 'nlp' }), runSummary(statusFixture('vit', { phase: 'Training' }), { team: 'vision' })];
    const names = (q: Parameters<typeof filterRuns>[1]) => filterRuns(runs, q).map((r) => r.run);
    expect(names({})).toEqual(['bert', 'vit']);
    expect(names({ phase: ['Training'] })).toEqual(['vit']);
    expect(names({ phase: ['Training,Completed'] })).toEqual(['bert', 'vit']);
    expect(names({ label: ['team=nlp'] })).toEqual(['bert']);
    expect(names({ label: ['team'] })).toEqual(['bert', 'vit']);
    expect(names({ label: ['team=nlp'], phase: ['Training'] })).toEqual([]);
  });
});

describe('dashboard --listen', () => {
  const parse = (addr: string, allowRemote = false) => parseDashboardAddress(addr, { flag: '--listen', allowRemote, allowFlag: '--allow-remote' });

  it('binds loopback: host:port, [::1]:port, :port and a bare port', () => {
    expect(parse('127.0.0.1:8080')).toEqual({ host: '127.0.0.1', port: 8080, loopback: true });
    expect(parse('[::1]:9000')).toEqual({ host: '::1', port: 9000, loopback: true });
    expect(parse(':8081')).toEqual({ host: '127.0.0.1', port: 8081, loopback: true });
    expect(parse('8082')).toEqual({ host: '127.0.0.1', port: 8082, loopback: true });
    expect(parse('localhost:0')).toEqual({ host: 'localhost', port: 0, loopback: true });
  });

  it('refuses other interfaces unless asked explicitly, and says how to serve them safely', () => {
    expect(() => parse('0.0.0.0:8080')).toThrow(/loopback only .*reverse proxy that authenticates .*--allow-remote/);
    expect(() => parse('10.0.0.5:8080')).toThrow(/--allow-remote/);
    expect(parse('0.0.0.0:8080', true)).toEqual({ host: '0.0.0.0', port: 8080, loopback: false });
  });

  it('says what a listen address looks like when given something else', () => {
    expect(() => parse('8080:localhost')).toThrow('--listen "8080:localhost" is not a listen address: use host:port (127.0.0.1:8080)');
    expect(() => parse('127.0.0.1:70000')).toThrow(/is not a listen address/);
    expect(() => parse('dashboard.internal:8080', true)).toThrow(/"dashboard.internal" is not an IP address/);
  });
});
