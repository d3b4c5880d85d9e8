// The lines a controller command (reconcile, apply) prints besides its live display: events worth
// a line, problems in spec files as they appear and go away, and notices about leases and pruning.
import type { ControllerNotice } from '../reconciler/controller.js';
import { formatDiagnostic, type Diagnostic } from '../spec/diagnostics.js';
import type { RunEvent } from '../state/types.js';

/** The events worth a line of their own above the live display. */
export function eventLine(e: RunEvent): string | undefined {
  // Self-transitions (e.g. a rehearsal being armed) say nothing a person needs; the effect line does.
  if (e.kind === 'transition' && e.action.includes('->')) {
    const why = e.message && !/^[A-Z_]+$/.test(e.message) ? ` (${firstLine(e.message)})` : '';
    return `${e.run}: ${e.action}${why}`;
  }
  if (e.kind === 'effect' && (e.action === 'launch' || e.action === 'deliverSpotNotice' || e.result === 'error')) {
    return `${e.run}: ${e.message ?? e.action}`;
  }
  if (e.kind === 'spec' && e.action !== 'created') return `${e.run}: ${firstLine(e.message ?? e.action)}`;
  if (e.kind === 'error') return `${e.run}: ${e.action} failed: ${e.message ?? ''} (will retry)`;
  if (e.kind === 'notification') return `${e.run}: ${firstLine(e.message ?? e.action)}`;
  return undefined;
}

/**
 * Reports spec problems load after load: each problem when it appears (the same lines as
 * `runctl validate`), and a note when a file that had errors is valid again. A problem that
 * persists is not repeated on every reload.
 */
export class DiagnosticsReporter {
  private shown = new Set<string>();
  private invalid = new Set<string>();

  constructor(private readonly print: (line: string) => void) {}

  report(diagnostics: readonly Diagnostic[], invalidFiles: readonly string[]): void {
    const now = new Set<string>();
    for (const d of diagnostics) {
      const line = formatDiagnostic(d);
      now.add(line);
      if (!this.shown.has(line)) this.print(line);
    }
    const invalid = new Set(invalidFiles);
    for (const file of invalid) {
      if (!this.invalid.has(file)) this.print(`runctl: ${file} has errors: runs defined there keep their last valid spec; nothing is done on the strength of it`);
    }
    for (const file of this.invalid) {
      if (!invalid.has(file)) this.print(`runctl: ${file} is valid again`);
    }
    this.shown = now;
    this.invalid = invalid;
  }
}

/** Prints controller notices once per change (a run left to another controller is said once, not every retry). */
export function noticePrinter(print: (line: string) => void): (notice: ControllerNotice) => void {
  const lastByRun = new Map<string, string>();
  let lastGlobal = '';
  return (n) => {
    if ('run' in n) {
      const key = n.kind === 'lease-held-elsewhere' ? n.kind : `${n.kind}:${n.message}`;
      if (lastByRun.get(n.run) === key) return;
      lastByRun.set(n.run, key);
      print(`${n.run}: ${n.message}`);
      return;
    }
    const line = n.kind === 'prune-refused' ? `runctl: warning: ${n.message}` : `runctl: ${n.message}`;
    if (line === lastGlobal) return;
    lastGlobal = line;
    print(line);
  };
}

export function firstLine(text: string): string {
  const line = text.split('\n')[0] ?? '';
  return line.length > 160 ? `${line.slice(0, 157)}...` : line;
}
