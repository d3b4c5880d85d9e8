// The text of `runctl describe RUN`: where the run stands, why (conditions), what it ran on and
// what it cost (instance history), and everything that happened to it (event history).
import { isLegacyUid } from '../state/identity.js';
import type { RunEvent, RunStatus } from '../state/types.js';
import { colorPhase, noColors, type Colors } from './colors.js';
import { formatAge, formatBytes, formatDuration, formatLoss, formatTime, formatUSD } from './format.js';
import { ledgerLines } from './ledger.js';
import { progressBar } from './progress.js';
import { alignColumns } from './table.js';
import { firstLine, padEnd, sanitizeLine } from './text.js';

export type SpecSummary = ReadonlyArray<readonly [string, string]> | Readonly<Record<string, string>>;

export interface DescribeInput {
  status: RunStatus;
  events: readonly RunEvent[];
  /** Spec summary as label/value pairs, in the order to show (the CLI picks the fields). */
  spec?: SpecSummary;
  now: number;
  colors?: Colors;
  /** Show only the newest this many events, saying how many were left out. Default: all. */
  maxEvents?: number;
}

const NONE = '  <none>';

export function renderDescribe(input: DescribeInput): string {
  const { status: s, now } = input;
  const c = input.colors ?? noColors;
  const out: string[] = [];

  out.push(...keyValues(summary(s, now, c)));
  if (s.failure) out.push(...block('Failure', s.failure.message));
  const faults = (s.faults ?? []).filter((f) => !f.clearedAt);
  if (faults.length > 0) {
    // Faults the agent reports on the instance, in full: the conditions table shows one line each.
    out.push('', c.bold('Faults:'));
    for (const f of faults) {
      out.push(`  ${c.red(sanitizeLine(f.reason))} (attempt ${f.attempt}, since ${formatTime(f.since)}, ${formatAge(f.since, now)} ago)`);
      const lines = (f.file ? `${f.message}\nfile: ${f.file}` : f.message).split(/\r?\n/).map(sanitizeLine);
      out.push(...lines.map((l) => `    ${l}`.trimEnd()));
    }
  }

  const spec = input.spec ? (Array.isArray(input.spec) ? input.spec : Object.entries(input.spec)) : [];
  if (spec.length > 0) {
    out.push('', c.bold('Spec:'));
    // A multi-line `run:` or `setup:` is shell: its lines are shown as written, aligned under the
    // first, never joined (joined, it reads as different, often invalid, shell).
    out.push(...keyValues(spec.map(([k, v]) => [k, v.replace(/\n+$/, '').split('\n').map(sanitizeLine).join('\n')] as [string, string]), '  '));
  }

  out.push('', c.bold('Conditions:'));
  if (s.conditions.length === 0) out.push(NONE);
  else {
    out.push(
      ...alignColumns(
        [
          ['TYPE', 'STATUS', 'REASON', 'AGE', 'MESSAGE'],
          ...s.conditions.map((k) => [sanitizeLine(k.type), k.status, sanitizeLine(k.reason), formatAge(k.lastTransitionTime, now), firstLine(k.message)]),
        ],
        { indent: '  ' },
      ),
    );
  }

  out.push('', c.bold('Checkpoints:'));
  out.push(...checkpointRows(s, now));

  out.push('', c.bold('Instances:'));
  if (s.instances.length === 0) out.push(NONE);
  else {
    const rows = s.instances.map((i) => {
      const end = i.endedAt ? Date.parse(i.endedAt) : now;
      return [
        String(i.attempt),
        String(i.generation),
        sanitizeLine(i.id),
        sanitizeLine(i.type ?? '-'),
        i.market ?? '-',
        sanitizeLine(i.zone ?? '-'),
        formatTime(i.launchedAt),
        formatDuration(end - Date.parse(i.launchedAt)) + (i.endedAt ? '' : ' (running)'),
        i.endReason ? firstLine(i.endReason) : '-',
        formatUSD(i.costUSD),
        i.codeBundle ? sanitizeLine(i.codeBundle.slice(0, 12)) : '-',
      ];
    });
    out.push(
      ...alignColumns([['ATTEMPT', 'GEN', 'INSTANCE', 'TYPE', 'MARKET', 'ZONE', 'LAUNCHED', 'RAN', 'END REASON', 'COST', 'CODE'], ...rows], {
        indent: '  ',
        align: ['right', 'right', 'left', 'left', 'left', 'left', 'left', 'left', 'left', 'right', 'left'],
      }),
    );
    out.push(`  Total cost: ${formatUSD(s.costUSD)}`);
  }

  out.push('', c.bold('Timeline:'));
  out.push(...ledgerLines(s.ledger));

  out.push('', c.bold('Events:'));
  const shown = input.maxEvents !== undefined && input.events.length > input.maxEvents ? input.events.slice(-input.maxEvents) : input.events;
  if (shown.length === 0) out.push(NONE);
  else {
    if (shown.length < input.events.length) out.push(`  (${input.events.length - shown.length} older events not shown)`);
    const rows = shown.map((e) => [formatTime(e.at), e.kind, sanitizeLine(e.action), colorResult(c, e.result), eventMessage(e)]);
    out.push(...alignColumns([['TIME', 'KIND', 'ACTION', 'RESULT', 'MESSAGE'], ...rows], { indent: '  ' }));
  }
  return `${out.join('\n')}\n`;
}

function summary(s: RunStatus, now: number, c: Colors): Array<[string, string]> {
  const rows: Array<[string, string]> = [
    ['Name', s.run],
    ['UID', isLegacyUid(s.uid) ? `${s.uid} (recorded before uids: storage at the un-suffixed runs/${s.run}/ prefix)` : s.uid],
    ['Phase', colorPhase(c, s.phase)],
    ['Generation', `${s.generation} (observed ${s.observedGeneration}, spec ${s.specHash})`],
    ['Attempt', `${s.attempt} (${plural(s.interruptions, 'interruption')}, ${plural(s.errorRetries, 'error retry', 'error retries')})`],
    ['Age', formatAge(s.createdAt, now)],
  ];
  if (s.progress) {
    const p = s.progress;
    const bar = p.total && p.total > 0 ? progressBar(p.step, p.total) : `step ${p.step}`;
    rows.push(['Progress', p.loss !== undefined ? `${bar}  loss ${formatLoss(p.loss)}` : bar]);
    const metrics = Object.entries(p.metrics ?? {});
    // Names are the job's (a Trainer dict's keys, a pattern's groups): shown sanitized.
    if (metrics.length > 0) rows.push(['Metrics', metrics.map(([name, value]) => `${sanitizeLine(name)} ${formatLoss(value)}`).join('  ')]);
  }
  if (s.lastCheckpoint) {
    const cp = s.lastCheckpoint;
    const step = cp.step !== undefined ? ` at step ${cp.step}` : ', step unknown';
    rows.push(['Last checkpoint', `${sanitizeLine(cp.id)}${step} (${formatAge(cp.at, now)} ago, ${plural(cp.files, 'file')}, ${formatBytes(cp.bytes)})`]);
  }
  rows.push(['Cost', costSummary(s)]);
  if (s.source) rows.push(['Source', sanitizeLine(s.source.revision ? `${s.source.file} @ ${s.source.revision}` : s.source.file)]);
  if (s.launchBlocked) {
    const b = s.launchBlocked;
    rows.push(['Waiting for capacity', `${firstLine(b.message)} (since ${formatAge(b.since, now)} ago, next try ${formatTime(b.retryAt)})`]);
  }
  if (s.nextSpec) rows.push(['Next generation', `${s.nextSpec.generation} (spec ${s.nextSpec.specHash}), waiting for the current attempt to stop`]);
  return rows;
}

/** The run's cost, what spot saved, and whether some of it is unknown (then not counted). */
function costSummary(s: RunStatus): string {
  const l = s.ledger;
  let text = formatUSD(s.costUSD);
  if (l?.savingsUSD !== undefined) text += ` (${formatUSD(l.savingsUSD)} less than on-demand)`;
  if (l && l.unknown.length > 0) text += `; ${l.unknown.length === 1 ? 'one attempt' : `${l.unknown.length} attempts`} not priced (see Timeline)`;
  if (s.spec.budget.maxCostUSD !== undefined) text += `, budget ${formatUSD(s.spec.budget.maxCostUSD)}`;
  return text;
}

/**
 * The checkpoints kept in storage for the current generation, oldest first: the step each holds
 * (`unknown` when neither the job nor a recognised layout said), size, and how many of its files
 * the sync that published it uploaded vs found already stored (docs/checkpoints.md).
 */
function checkpointRows(s: RunStatus, now: number): string[] {
  const kept = s.checkpoints ?? (s.lastCheckpoint ? [s.lastCheckpoint] : []);
  if (kept.length === 0) return [NONE];
  const rows = kept.map((cp) => [
    sanitizeLine(cp.id),
    cp.step !== undefined ? String(cp.step) : 'unknown',
    cp.stepSource ?? '-',
    formatBytes(cp.bytes),
    String(cp.files),
    cp.uploaded !== undefined ? String(cp.uploaded) : '-',
    cp.reused !== undefined ? String(cp.reused) : '-',
    `${formatAge(cp.at, now)} ago`,
  ]);
  return alignColumns([['ID', 'STEP', 'STEP FROM', 'SIZE', 'FILES', 'UPLOADED', 'REUSED', 'AGE'], ...rows], {
    indent: '  ',
    align: ['left', 'right', 'left', 'right', 'right', 'right', 'right', 'left'],
  });
}

function keyValues(rows: ReadonlyArray<readonly [string, string]>, indent = ''): string[] {
  const width = Math.max(...rows.map(([k]) => k.length)) + 2;
  return rows.flatMap(([k, v]) => {
    const [first = '', ...rest] = v.split('\n');
    return [`${indent}${padEnd(`${k}:`, width)}${first}`.trimEnd(), ...rest.map((l) => `${indent}${' '.repeat(width)}${l}`.trimEnd())];
  });
}

/** A multi-line message under its own label, every line indented and made safe to print. */
function block(label: string, text: string): string[] {
  const lines = text.split(/\r?\n/).map(sanitizeLine);
  while (lines.length > 0 && lines[lines.length - 1]?.trim() === '') lines.pop();
  return [`${label}:`, ...lines.map((l) => `  ${l}`.trimEnd())];
}

function eventMessage(e: RunEvent): string {
  const msg = e.message ? firstLine(e.message) : '';
  const req = e.requestId ? `(request ${sanitizeLine(e.requestId)})` : '';
  return [msg, req].filter(Boolean).join(' ') || '-';
}

function colorResult(c: Colors, result: RunEvent['result']): string {
  if (!result) return '-';
  if (result === 'error') return c.red(result);
  if (result === 'ok' || result === 'adopted') return c.green(result);
  return c.gray(result);
}

function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}
