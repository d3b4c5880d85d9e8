// Aligned plain-text tables (color-aware), and the `runctl status` table built on them.
import type { RunStatus } from '../state/types.js';
import { colorPhase, noColors, type Colors } from './colors.js';
import { formatAge, formatLoss } from './format.js';
import { padEnd, padStart, sanitizeLine, truncate, visibleWidth } from './text.js';

export type Align = 'left' | 'right';

export interface TableOptions {
  /** Per column; left unless given. */
  align?: readonly Align[];
  /** Spaces between columns (default 3, like kubectl). */
  gap?: number;
  /** Prefix for every line, e.g. two spaces inside a describe section. */
  indent?: string;
  /** Cut lines to this many columns (e.g. the terminal width). */
  maxWidth?: number;
}

/** Pads cells so columns line up. The last column is never padded (no trailing spaces). */
export function alignColumns(rows: readonly (readonly string[])[], opts: TableOptions = {}): string[] {
  const gap = ' '.repeat(opts.gap ?? 3);
  const columns = Math.max(0, ...rows.map((r) => r.length));
  const widths = Array.from({ length: columns }, (_, c) => Math.max(0, ...rows.map((r) => visibleWidth(r[c] ?? ''))));
  return rows.map((row) => {
    const cells = row.map((cell, c) => {
      const right = opts.align?.[c] === 'right';
      if (c === row.length - 1 && !right) return cell;
      return right ? padStart(cell, widths[c] as number) : padEnd(cell, widths[c] as number);
    });
    const line = `${opts.indent ?? ''}${cells.join(gap)}`.trimEnd();
    return opts.maxWidth ? truncate(line, opts.maxWidth) : line;
  });
}

/** A header row and data rows, one string per line, each ending in a newline. */
export function renderTable(headers: readonly string[], rows: readonly (readonly string[])[], opts: TableOptions = {}): string {
  return alignColumns([headers, ...rows], opts)
    .map((l) => `${l}\n`)
    .join('');
}

export interface StatusTableOptions {
  now: number;
  colors?: Colors;
  maxWidth?: number;
}

export const STATUS_HEADERS = ['RUN', 'PHASE', 'ATTEMPT', 'PROGRESS', 'AGE', 'INSTANCE', 'LAST CHECKPOINT'] as const;

/** The `runctl status` table. */
export function renderStatusTable(statuses: readonly RunStatus[], opts: StatusTableOptions): string {
  if (statuses.length === 0) return 'No runs found.\n';
  const c = opts.colors ?? noColors;
  const rows = statuses.map((s) => [
    s.run,
    colorPhase(c, s.phase),
    String(s.attempt),
    progressCell(s),
    formatAge(s.createdAt, opts.now),
    currentInstance(s),
    lastCheckpoint(s, opts.now),
  ]);
  return renderTable([...STATUS_HEADERS], rows, { align: ['left', 'left', 'right'], maxWidth: opts.maxWidth });
}

/** `120/400 loss 0.3123`, `step 77`, or `-` (docs/progress.md). */
export function progressCell(s: RunStatus): string {
  const p = s.progress;
  if (!p) return '-';
  const steps = p.total !== undefined && p.total > 0 ? `${p.step}/${p.total}` : `step ${p.step}`;
  return p.loss !== undefined && Number.isFinite(p.loss) ? `${steps} loss ${formatLoss(p.loss)}` : steps;
}

/** The instance the current attempt runs on: `i-0abc (g5.xlarge, spot)`, or `-`. */
export function currentInstance(s: RunStatus): string {
  const live = [...s.instances].reverse().find((i) => !i.endedAt);
  if (!live) return '-';
  const details = [live.type, live.market].filter(Boolean).join(', ');
  return sanitizeLine(details ? `${live.id} (${details})` : live.id);
}

/** `000004 step 200, 1m05s ago` (`step unknown` when the checkpoint's step is not known), or `-`. */
export function lastCheckpoint(s: RunStatus, now: number): string {
  const cp = s.lastCheckpoint;
  if (!cp) return '-';
  const step = cp.step !== undefined ? ` step ${cp.step}` : ' step unknown';
  return `${sanitizeLine(cp.id)}${step}, ${formatAge(cp.at, now)} ago`;
}
