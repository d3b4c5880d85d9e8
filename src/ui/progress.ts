// One line per run for `runctl reconcile`: name, phase, attempt, progress bar, loss, elapsed, and
// while installing the last few lines of setup output, so a long install never looks hung.
import { TERMINAL_PHASES, type RunStatus } from '../state/types.js';
import { colorPhase, noColors, type Colors } from './colors.js';
import { formatDuration, formatLoss } from './format.js';
import { alignColumns } from './table.js';
import { firstLine, sanitizeLine, truncate } from './text.js';

export interface RunExtras {
  /** Latest lines of `setup` output; the last few are shown while the run is Installing. */
  installTail?: readonly string[];
  /** Latest thing worth saying about the run; shown at the end of its line. */
  message?: string;
}

export type ExtrasByRun = ReadonlyMap<string, RunExtras> | Readonly<Record<string, RunExtras | undefined>>;

export interface ProgressRenderOptions {
  /** Epoch ms; elapsed times are measured to it. */
  now: number;
  /** Columns available; lines are cut to fit. Default 100. */
  width?: number;
  colors?: Colors;
}

export const DEFAULT_WIDTH = 100;
export const INSTALL_TAIL_LINES = 3;
const BAR_CELLS = 10;
const TAIL_INDENT = '    ';

/** `[#####-----] 120/400`; steps beyond the total fill the bar and no more. */
export function progressBar(step: number, total: number, cells = BAR_CELLS): string {
  const ratio = total > 0 ? Math.min(1, Math.max(0, step / total)) : 0;
  const filled = Math.floor(ratio * cells);
  return `[${'#'.repeat(filled)}${'-'.repeat(cells - filled)}] ${step}/${total}`;
}

export interface RunBlock {
  run: string;
  /** The run's line followed by its indented install tail, if any. */
  lines: string[];
}

/** Renders every run; lines are aligned across runs and cut to the width. */
export function renderRunBlocks(statuses: readonly RunStatus[], extras: ExtrasByRun | undefined, opts: ProgressRenderOptions): RunBlock[] {
  const c = opts.colors ?? noColors;
  const width = opts.width ?? DEFAULT_WIDTH;
  const cells = statuses.map((s) => runCells(s, extrasFor(extras, s.run), opts.now, c));
  // A column nobody has (no run reports loss yet) takes no space at all.
  const used = (cells[0] ?? []).map((_, col) => cells.some((row) => row[col] !== ''));
  const rows = cells.map((row) => row.filter((_, col) => used[col]));
  const lines = alignColumns(rows, { gap: 2, maxWidth: width });
  return statuses.map((s, i) => ({
    run: s.run,
    lines: [lines[i] as string, ...installTail(s, extrasFor(extras, s.run)).map((l) => truncate(TAIL_INDENT + c.dim(l), width))],
  }));
}

/** All lines of the display, in the order of `statuses`. */
export function renderProgress(statuses: readonly RunStatus[], extras: ExtrasByRun | undefined, opts: ProgressRenderOptions): string[] {
  return renderRunBlocks(statuses, extras, opts).flatMap((b) => b.lines);
}

/** What has to change before the plain (non-TTY) display prints a run again. */
export function changeKey(s: RunStatus): string {
  const p = s.progress;
  const tenth = p?.total && p.total > 0 ? Math.floor(Math.min(1, Math.max(0, p.step / p.total)) * 10) : '-';
  return `${s.phase}|${s.attempt}|${tenth}`;
}

function runCells(s: RunStatus, extras: RunExtras | undefined, now: number, c: Colors): string[] {
  const p = s.progress;
  const progress = p ? (p.total && p.total > 0 ? progressBar(p.step, p.total) : `step ${p.step}`) : '';
  const loss = p?.loss !== undefined && Number.isFinite(p.loss) ? `loss ${formatLoss(p.loss)}` : '';
  return [s.run, colorPhase(c, s.phase), `attempt ${s.attempt}`, progress, loss, formatDuration(elapsed(s, now)), c.dim(message(s, extras))];
}

// A finished run's clock stops when it finished, not when someone looks at it.
function elapsed(s: RunStatus, now: number): number {
  const start = Date.parse(s.createdAt);
  const end = TERMINAL_PHASES.includes(s.phase) ? Date.parse(s.updatedAt) : now;
  return Number.isNaN(start) || Number.isNaN(end) ? 0 : end - start;
}

function message(s: RunStatus, extras: RunExtras | undefined): string {
  if (extras?.message) return firstLine(extras.message);
  if (s.phase === 'Failed' && s.failure) return firstLine(s.failure.message);
  if (s.launchBlocked) return firstLine(s.launchBlocked.message);
  if (s.agent?.message && s.agent.attempt === s.attempt) return firstLine(s.agent.message);
  return '';
}

function installTail(s: RunStatus, extras: RunExtras | undefined): string[] {
  if (s.phase !== 'Installing') return [];
  const fromAgent = s.agent && s.agent.attempt === s.attempt ? s.agent.logTail : undefined;
  const lines = (extras?.installTail ?? fromAgent ?? []).map(sanitizeLine).filter((l) => l.trim() !== '');
  return lines.slice(-INSTALL_TAIL_LINES);
}

function extrasFor(extras: ExtrasByRun | undefined, run: string): RunExtras | undefined {
  if (!extras) return undefined;
  if (extras instanceof Map) return extras.get(run);
  return (extras as Readonly<Record<string, RunExtras | undefined>>)[run];
}
