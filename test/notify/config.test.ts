// `notifications:` as users write it: errors name file, line, column and field with what is valid;
// a plain URL that is a credential is warned about (pointing at urlFrom) and never quoted; the
// bodies sent to each kind of receiver have the shape that receiver's public API documents.
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { formatBody, type NotificationMessage } from '../../src/notify/formats.js';
import { credentialInUrl, redactUrl } from '../../src/notify/credentials.js';
import { notificationOf, receiversFor, stampNotifications } from '../../src/notify/receivers.js';
import { formatDiagnostic } from '../../src/spec/diagnostics.js';
import { loadProjectConfig, loadRuns } from '../../src/spec/load.js';
import { localSpec, NO_PROJECT, tempRepo } from '../spec/helpers.js';

const SLACK = 'https://hooks.slack.com/services/T000/B000/XXXXSECRETXXXX';
const DISCORD = 'https://discord.com/api/webhooks/123456/SECRETTOKENvalue';

async function validate(extra: string) {
  const repo = tempRepo();
  const file = repo.write('runs/a.yaml', localSpec('a', extra));
  const result = await loadRuns([file], { repoRoot: repo.root, project: NO_PROJECT });
  return { ...result, lines: result.diagnostics.map(formatDiagnostic) };
}

describe('validating notifications in a run', () => {
  it('accepts receivers and fills in format, events and timeout', async () => {
    const { runs, diagnostics } = await validate(
      ['  notifications:', '    - url: http://127.0.0.1:9000/hook', '    - urlFrom: {env: SLACK_WEBHOOK_URL}', '      format: slack', '      events: [Completed, Resumed]', ''].join('\n'),
    );
    expect(diagnostics).toEqual([]);
    expect(runs[0]?.run.spec.notifications).toEqual([
      { url: 'http://127.0.0.1:9000/hook', format: 'generic', events: ['Interrupted', 'Failed', 'Completed'], timeout: '10s' },
      { urlFrom: { env: 'SLACK_WEBHOOK_URL' }, format: 'slack', events: ['Completed', 'Resumed'], timeout: '10s' },
    ]);
  });

  it('refuses bad entries with file, line, column, field and what would be valid', async () => {
    const { runs, lines } = await validate(
      [
        '  notifications:',
        '    - url: ftp://example.com/x', // line 10
        '    - url: http://127.0.0.1/a',
        '      urlFrom: {env: HOOK}', // line 12
        '    - format: teams', // line 13
        '      events: [Finished]',
        '    - urlFrom: {env: 1BAD}', // line 15
        '      timeout: 10m',
        '',
      ].join('\n'),
    );
    expect(runs).toEqual([]);
    const text = lines.join('\n');
    expect(text).toMatch(/a\.yaml:10:\d+ error spec\.notifications\[0\]\.url: must be an http:\/\/ or https:\/\/ URL without spaces \(value not shown/);
    expect(text).not.toContain('ftp://example.com/x');
    expect(text).toMatch(/a\.yaml:12:7 error spec\.notifications\[1\]\.urlFrom: cannot be given together with url/);
    expect(text).toMatch(/a\.yaml:13:\d+ error spec\.notifications\[2\]\.format: must be one of generic, slack, discord \(got "teams"\)/);
    expect(text).toMatch(/a\.yaml:14:\d+ error spec\.notifications\[2\]\.events\[0\]: must be one of Interrupted, Resumed, Failed, Completed, BudgetReached, CheckpointSyncStalled \(got "Finished"/);
    expect(text).toMatch(/a\.yaml:13:\d+ error spec\.notifications\[2\]: needs url \(http\(s\):\/\/…\) or urlFrom: \{env: NAME\}/);
    expect(text).toMatch(/a\.yaml:15:\d+ error spec\.notifications\[3\]\.urlFrom\.env: /);
    expect(text).toMatch(/a\.yaml:16:\d+ error spec\.notifications\[3\]\.timeout: must be between 1s and 5m \(got 10m\)/);
  });

  it('warns when a plain url is a credential, says to use urlFrom, and never quotes it', async () => {
    const { runs, diagnostics, lines } = await validate(
      ['  notifications:', `    - url: ${SLACK}`, '      format: slack', `    - url: ${DISCORD}`, '      format: discord', '    - url: https://user:pw@example.com/hook', '    - url: https://example.com/hook?token=abc', '    - url: https://example.com/hook?run=1', ''].join('\n'),
    );
    expect(runs).toHaveLength(1); // warnings do not refuse the run
    expect(diagnostics.every((d) => d.severity === 'warning')).toBe(true);
    expect(lines).toHaveLength(4);
    expect(lines[0]).toMatch(/a\.yaml:10:12 warning spec\.notifications\[0\]\.url: looks like it carries a credential \(it is a Slack webhook URL.*use urlFrom: \{env: NAME\} instead/);
    expect(lines[1]).toMatch(/:12:12 warning spec\.notifications\[1\]\.url: .*Discord webhook URL/);
    expect(lines[2]).toMatch(/:14:12 warning .*user name or password/);
    expect(lines[3]).toMatch(/:15:12 warning .*query parameter "token"/);
    for (const l of lines) expect(l).not.toMatch(/SECRET|abc|pw@/);
  });

  it('keeps webhook URLs out of the spec-change events (a changed URL is a changed credential)', async () => {
    const { specChanges } = await import('../../src/reconciler/spec-diff.js');
    const { testSpec } = await import('../support/runs.js');
    const before = testSpec({ notifications: [{ url: 'http://127.0.0.1/a', format: 'generic', events: ['Failed'], timeout: '10s' }] } as never);
    const after = testSpec({ notifications: [{ url: SLACK, format: 'slack', events: ['Failed'], timeout: '10s' }] } as never);
    const changes = specChanges(before, after);
    expect(changes).toEqual([{ path: 'notifications', trained: false }]);
  });
});

describe('validating notifications in runctl.yaml', () => {
  it('applies valid receivers, warns about a credential URL, and refuses an invalid entry with its position', async () => {
    const repo = tempRepo();
    repo.write('runctl.yaml', ['notifications:', `  - url: ${SLACK}`, '    format: slack', '  - urlFrom: {env: HOOK_URL}', ''].join('\n'));
    const ok = await loadProjectConfig(repo.root);
    expect(ok.diagnostics.map(formatDiagnostic)).toEqual([expect.stringMatching(/runctl\.yaml:2:10 warning notifications\[0\]\.url: looks like it carries a credential/)]);
    expect(ok.config.notifications).toHaveLength(2);
    expect(ok.config.notifications?.[1]).toEqual({ urlFrom: { env: 'HOOK_URL' }, format: 'generic', events: ['Interrupted', 'Failed', 'Completed'], timeout: '10s' });

    repo.write('runctl.yaml', ['prune: true', 'notifications:', '  - events: [Completed]', ''].join('\n'));
    const bad = await loadProjectConfig(repo.root);
    expect(bad.diagnostics.map(formatDiagnostic)).toEqual([expect.stringMatching(/runctl\.yaml:3:\d+ error notifications\[0\]: needs url/)]);
    expect(bad.config.notifications).toBeUndefined();
    expect(path.basename(bad.diagnostics[0]!.file)).toBe('runctl.yaml');
  });
});

describe('credential detection and redaction', () => {
  it('recognises Slack, Discord, userinfo and token parameters, and nothing else', () => {
    expect(credentialInUrl(SLACK)).toMatch(/Slack/);
    expect(credentialInUrl('https://hooks.slack.com/workflows/T1/A2/3/xyz')).toMatch(/Slack/);
    expect(credentialInUrl(DISCORD)).toMatch(/Discord/);
    expect(credentialInUrl('https://discordapp.com/api/v10/webhooks/1/abc')).toMatch(/Discord/);
    expect(credentialInUrl('https://example.com/x?api_key=1')).toMatch(/api_key/);
    expect(credentialInUrl('http://127.0.0.1:9000/hook')).toBeUndefined();
    expect(credentialInUrl('https://hooks.slack.com/')).toBeUndefined();
  });

  it('removes a URL, its path and its password from text', () => {
    const msg = `connect ECONNREFUSED for ${DISCORD}; POST /api/webhooks/123456/SECRETTOKENvalue failed`;
    const out = redactUrl(msg, DISCORD);
    expect(out).not.toContain('SECRETTOKEN');
    expect(out).toContain('<redacted URL>');
  });
});

const MESSAGE: NotificationMessage = {
  run: 'quickstart',
  uid: 'u-1',
  event: 'Interrupted',
  phase: 'Interrupted',
  message: 'spot interruption notice <@everyone> & more',
  time: '2026-01-01T12:00:00.000Z',
  generation: 1,
  attempt: 1,
  id: 'quickstart:u-1:5>r-abc',
  links: { describe: 'runctl describe quickstart', logs: 'runctl logs quickstart' },
};

describe('bodies', () => {
  it('generic: runctl JSON with run, uid, event, phase, message, time, attempt, id and links', () => {
    expect(formatBody('generic', MESSAGE)).toEqual({
      run: 'quickstart',
      uid: 'u-1',
      event: 'Interrupted',
      phase: 'Interrupted',
      message: MESSAGE.message,
      time: MESSAGE.time,
      generation: 1,
      attempt: 1,
      id: MESSAGE.id,
      links: MESSAGE.links,
    });
  });

  it('slack: an incoming-webhook message with fallback text and header, section and context blocks, mrkdwn escaped', () => {
    const body = formatBody('slack', MESSAGE) as { text: string; blocks: Array<Record<string, any>> };
    expect(body.text).toBe('run quickstart interrupted (attempt 1): spot interruption notice <@everyone> & more');
    expect(body.blocks.map((b) => b.type)).toEqual(['header', 'section', 'context']);
    expect(body.blocks[0]!.text).toEqual({ type: 'plain_text', text: 'run quickstart interrupted (attempt 1)', emoji: false });
    expect(body.blocks[1]!.text.type).toBe('mrkdwn');
    expect(body.blocks[1]!.text.text).toContain('&lt;@everyone&gt; &amp; more');
    expect(body.blocks[2]!.elements[0].type).toBe('mrkdwn');
    expect(Object.keys(body).sort()).toEqual(['blocks', 'text']);
  });

  it('discord: content plus one embed within Discord limits, and mentions disabled', () => {
    const long = { ...MESSAGE, event: 'Failed' as const, phase: 'Failed', message: 'x'.repeat(5000) };
    const body = formatBody('discord', long) as { content: string; embeds: Array<Record<string, any>>; allowed_mentions: unknown };
    expect(Object.keys(body).sort()).toEqual(['allowed_mentions', 'content', 'embeds']);
    expect([...body.content].length).toBeLessThanOrEqual(2000);
    expect(body.allowed_mentions).toEqual({ parse: [] });
    const embed = body.embeds[0]!;
    expect(embed.title).toBe('run quickstart failed (attempt 1)');
    expect([...embed.description].length).toBeLessThanOrEqual(4096);
    expect(embed.timestamp).toBe(MESSAGE.time);
    expect(Number.isInteger(embed.color)).toBe(true);
    expect(embed.fields.map((f: { name: string }) => f.name)).toEqual(['event', 'phase', 'attempt', 'more']);
  });
});

describe('which run events notify', () => {
  const t = (action: string, data: Record<string, unknown> = {}) => notificationOf({ kind: 'transition', action, data });
  it('maps transitions and the stalled-sync fault onto the event names', () => {
    expect(t('Training -> Interrupted', { event: 'SPOT_NOTICE', attempt: 1 })).toBe('Interrupted');
    expect(t('Installing -> Training', { event: 'AGENT_TRAINING', attempt: 2 })).toBe('Resumed');
    expect(t('Installing -> Training', { event: 'AGENT_TRAINING', attempt: 1 })).toBeUndefined();
    expect(t('Training -> Completed', { event: 'JOB_SUCCEEDED' })).toBe('Completed');
    expect(t('Terminating -> Failed', { event: 'AGENT_STOPPED' })).toBe('Failed');
    expect(t('Training -> Terminating', { event: 'BUDGET_EXCEEDED' })).toBe('BudgetReached');
    expect(t('Interrupted: a -> b')).toBeUndefined();
    expect(notificationOf({ kind: 'observation', action: 'fault CheckpointSyncStalled' })).toBe('CheckpointSyncStalled');
    expect(notificationOf({ kind: 'observation', action: 'fault CheckpointSyncStalled cleared' })).toBeUndefined();
  });

  it('stamps an event for the receivers that want it; one endpoint listed twice is one receiver', () => {
    const receivers = receiversFor(
      [{ url: 'http://127.0.0.1/a', events: ['Completed'] }],
      [{ url: 'http://127.0.0.1/a', events: ['Failed'] }, { urlFrom: { env: 'HOOK' }, format: 'slack', events: ['Interrupted'] }],
    );
    expect(receivers).toHaveLength(2);
    expect(receivers[0]!.events).toEqual(['Failed', 'Completed']);
    expect(receivers[1]!.label).toBe('slack receiver (URL from $HOOK)');
    const done = stampNotifications({ kind: 'transition' as const, action: 'Training -> Completed', data: { event: 'JOB_SUCCEEDED' } }, receivers);
    expect((done.data as Record<string, unknown>).notify).toEqual([receivers[0]!.id]);
    const other = stampNotifications({ kind: 'transition' as const, action: 'Pending -> Provisioning', data: {} }, receivers);
    expect(other.data).toEqual({});
  });
});
