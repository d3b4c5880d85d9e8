// How `plan` and `apply` print a plan: text for people (Terraform-like symbols), Markdown for a CI
// job summary, JSON for machines. Printing only; the plan itself is src/reconciler/plan.ts.
import type { Plan, PlannedRun, PlanAction } from '../reconciler/plan.js';
import type { PlannedOrphanInstance } from '../reconciler/plan-orphans.js';
import { describeChange } from '../reconciler/spec-diff.js';
import type { Diagnostic } from '../spec/diagnostics.js';
import { noColors, type Colors } from '../ui/index.js';

export const PLAN_FORMATS = ['text', 'json', 'markdown'] as const;
export type PlanFormat = (typeof PLAN_FORMATS)[number];

const LABEL: Record<PlanAction, { symbol: string; words: string }> = {
  create: { symbol: '+', words: 'create' },
  update: { symbol: '~', words: 'update in place' },
  'new-generation': { symbol: '-/+', words: 'new generation' },
  suspend: { symbol: '~', words: 'suspend' },
  resume: { symbol: '~', words: 'resume' },
  prune: { symbol: '-', words: 'prune' },
  orphaned: { symbol: '!', words: 'orphaned' },
  'no-op': { symbol: '=', words: 'no-op' },
};

const ORDER: PlanAction[] = ['create', 'update', 'new-generation', 'suspend', 'resume', 'prune', 'orphaned', 'no-op'];

export function renderPlanText(plan: Plan, opts: { store: string; colors?: Colors }): string {
  const c = opts.colors ?? noColors;
  const paint = (action: PlanAction, s: string): string =>
    action === 'create' ? c.green(s) : action === 'prune' ? c.red(s) : action === 'orphaned' ? c.yellow(s) : action === 'no-op' ? c.dim(s) : c.yellow(s);
  const lines: string[] = [`runctl plan: ${plan.runs.length} run${plan.runs.length === 1 ? '' : 's'} against ${opts.store}`, ''];
  const shown = plan.runs.filter((r) => r.action !== 'no-op');
  for (const r of sortRuns(shown)) {
    const label = LABEL[r.action];
    const where = [r.file, r.phase, generationText(r)].filter(Boolean).join(', ');
    lines.push(`${paint(r.action, `${label.symbol.padStart(3)} ${label.words}`)} ${c.bold(r.run)}${where ? c.dim(` (${where})`) : ''}`);
    lines.push(`      why: ${r.reason}`);
    for (const change of r.changes) lines.push(`        ${describeChange(change)}`);
    lines.push(`      effect: ${r.effect}`);
    lines.push(`      price: ${r.price.note}`);
    if (r.recovery) lines.push(`      recovery: ${r.recovery.note}`);
    lines.push('');
  }
  for (const o of plan.orphanedInstances ?? []) {
    lines.push(`${c.red(`  - terminate orphaned instance`)} ${c.bold(o.instanceId)}${c.dim(` (run ${o.run}, ${uidText(o)}, generation ${o.generation}, attempt ${o.attempt}, ${o.state})`)}`);
    lines.push(`      why: ${CAUSE[o.cause]}: ${o.reason}`);
    lines.push(`      effect: ${ORPHAN_EFFECT}`);
    lines.push('');
  }
  const unchanged = plan.runs.filter((r) => r.action === 'no-op');
  if (unchanged.length > 0) {
    lines.push(c.dim(`  = unchanged: ${unchanged.map((r) => `${r.run} (${r.reason})`).join('; ')}`), '');
  }
  if (plan.pruneRefused) lines.push(c.yellow(`Warning: ${plan.pruneRefused}`), '');
  if (plan.invalidFiles.length > 0) {
    lines.push(c.red(`Error: ${plan.invalidFiles.length} spec file${plan.invalidFiles.length === 1 ? ' has' : 's have'} errors (${plan.invalidFiles.join(', ')}): runs defined there keep their last valid spec`), '');
  }
  lines.push(summaryLine(plan));
  return `${lines.join('\n')}\n`;
}

export function summaryLine(plan: Plan): string {
  const n = plan.counts;
  const orphans = plan.orphanedInstances?.length ?? 0;
  const parts = [
    n.create && `${n.create} to create`,
    n.update && `${n.update} to update in place`,
    n['new-generation'] && `${n['new-generation']} new generation${n['new-generation'] === 1 ? '' : 's'}`,
    n.suspend && `${n.suspend} to suspend`,
    n.resume && `${n.resume} to resume`,
    n.prune && `${n.prune} to prune`,
    orphans && `${orphans} orphaned instance${orphans === 1 ? '' : 's'} to terminate`,
  ].filter(Boolean);
  const rest = [n.orphaned && `${n.orphaned} orphaned (left alone)`, n['no-op'] && `${n['no-op']} unchanged`].filter(Boolean);
  if (parts.length === 0) return `No changes.${rest.length ? ` ${capitalize(rest.join(', '))}.` : ''}`;
  return `Plan: ${parts.join(', ')}${rest.length ? `; ${rest.join(', ')}` : ''}.`;
}

export function renderPlanMarkdown(plan: Plan, opts: { store: string }): string {
  const lines = [`### runctl plan`, '', `Against \`${opts.store}\`. ${summaryLine(plan)}`, ''];
  if (plan.runs.length > 0) {
    lines.push('| | run | action | why | effect | price |', '|---|---|---|---|---|---|');
    for (const r of sortRuns(plan.runs)) {
      const why = [r.reason, ...r.changes.map(describeChange)].map(cell).join('<br>');
      lines.push(`| \`${LABEL[r.action].symbol}\` | \`${r.run}\` | ${LABEL[r.action].words} | ${why} | ${[r.effect, ...(r.recovery ? [`recovery: ${r.recovery.note}`] : [])].map(cell).join('<br>')} | ${cell(r.price.note)} |`);
    }
    lines.push('');
  }
  if (plan.orphanedInstances && plan.orphanedInstances.length > 0) {
    lines.push('Orphaned instances (the pass terminates them):', '', '| instance | run | uid | generation | attempt | state | why |', '|---|---|---|---|---|---|---|');
    for (const o of plan.orphanedInstances) {
      lines.push(`| \`${o.instanceId}\` | \`${o.run}\` | ${o.uid ? `\`${o.uid}\`` : 'none'} | ${o.generation} | ${o.attempt} | ${o.state} | ${cell(`${CAUSE[o.cause]}: ${o.reason}`)} |`);
    }
    lines.push('');
  }
  if (plan.pruneRefused) lines.push(`> **Warning:** ${cell(plan.pruneRefused)}`, '');
  if (plan.invalidFiles.length > 0) lines.push(`> **Error:** spec files with errors: ${plan.invalidFiles.map((f) => `\`${f}\``).join(', ')}`, '');
  return `${lines.join('\n')}\n`;
}

export function renderPlanJson(plan: Plan, diagnostics: readonly Diagnostic[], opts: { store: string }): string {
  return `${JSON.stringify(
    {
      formatVersion: 1,
      store: opts.store,
      changes: plan.changes > 0,
      summary: plan.counts,
      pruneRefused: plan.pruneRefused ?? null,
      invalidFiles: plan.invalidFiles,
      runs: plan.runs.map((r: PlannedRun) => ({
        run: r.run,
        action: r.action,
        reason: r.reason,
        effect: r.effect,
        file: r.file ?? null,
        phase: r.phase ?? null,
        generation: { from: r.generation.from ?? null, to: r.generation.to },
        changes: r.changes,
        price: r.price,
        // Set for a run about to start and when a prelaunch field changed: its effective value.
        recovery: r.recovery ?? null,
      })),
      // null: not looked for (--no-cloud-checks, or the listing failed: see stderr).
      orphanedInstances: plan.orphanedInstances ?? null,
      diagnostics,
    },
    null,
    2,
  )}\n`;
}

const CAUSE: Record<PlannedOrphanInstance['cause'], string> = {
  finished: 'run finished',
  deleted: 'run deleted',
  unknown: 'run unknown',
  're-created': 'run re-created',
};

const ORPHAN_EFFECT = 'terminated by the pass (nothing else will terminate it); checkpoints in storage are kept';

function uidText(o: PlannedOrphanInstance): string {
  return o.uid ? `uid ${o.uid}` : 'no uid';
}

function sortRuns(runs: readonly PlannedRun[]): PlannedRun[] {
  return [...runs].sort((a, b) => ORDER.indexOf(a.action) - ORDER.indexOf(b.action) || (a.run < b.run ? -1 : a.run > b.run ? 1 : 0));
}

function generationText(r: PlannedRun): string {
  if (r.generation.from === undefined) return '';
  return r.generation.from === r.generation.to ? `generation ${r.generation.to}` : `generation ${r.generation.from} -> ${r.generation.to}`;
}

function cell(text: string): string {
  return text.replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

function capitalize(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}
