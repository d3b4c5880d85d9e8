// The progress history document the agent writes per attempt (`<attempt prefix>/progress.json`,
// src/agent/layout.ts; written by runctl_agent/progress_history.py) and its reading on the
// controller side, shared by every provider.
//
//   {"version": 1, "run": "r", "generation": 1, "attempt": 2,
//    "points": [{"time": "2026-…Z", "step": 450, "total": 1000, "metrics": {"loss": 2.31}}, …]}
//
// The agent replaces the object whole (atomically: a file rename, or one S3 PUT), so a reader
// never sees half of one.
import type { ProgressPoint } from '../providers/types.js';

export const PROGRESS_DOCUMENT_VERSION = 1;

/** The stored document, as the agent writes it. */
export interface ProgressHistoryDocument {
  version: typeof PROGRESS_DOCUMENT_VERSION;
  run: string;
  generation: number;
  attempt: number;
  /** Oldest first; at most the agent's bound (docs/progress.md). */
  points: ProgressPoint[];
}

/** The document's text is not a progress history runctl can read (`where` names the object). */
export class ProgressDocumentError extends Error {
  constructor(where: string, why: string) {
    super(`progress history ${where} ${why}; it is read again next time`);
    this.name = 'ProgressDocumentError';
  }
}

const finite = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

/**
 * The points of a stored progress history, oldest first. A point that is not well formed (no
 * finite step, no time) is left out, and so is a metric that is not a finite number: one bad
 * point never hides the curve. Throws ProgressDocumentError for text that is not JSON or not a
 * version-1 document.
 */
export function parseProgressDocument(text: string, where: string): ProgressPoint[] {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new ProgressDocumentError(where, 'is not valid JSON');
  }
  if (typeof doc !== 'object' || doc === null || !Array.isArray((doc as { points?: unknown }).points)) {
    throw new ProgressDocumentError(where, 'has no "points" list');
  }
  const version = (doc as { version?: unknown }).version;
  if (version !== PROGRESS_DOCUMENT_VERSION) {
    throw new ProgressDocumentError(where, `has version ${JSON.stringify(version)}, and this runctl reads version ${PROGRESS_DOCUMENT_VERSION}`);
  }
  const points: ProgressPoint[] = [];
  for (const raw of (doc as { points: unknown[] }).points) {
    if (typeof raw !== 'object' || raw === null) continue;
    const p = raw as Record<string, unknown>;
    if (!finite(p.step) || typeof p.time !== 'string') continue;
    const metrics: Record<string, number> = {};
    if (typeof p.metrics === 'object' && p.metrics !== null) {
      for (const [name, value] of Object.entries(p.metrics as Record<string, unknown>)) if (finite(value)) metrics[name] = value;
    }
    const point: ProgressPoint = { time: p.time, step: p.step, metrics };
    if (finite(p.total)) point.total = p.total;
    points.push(point);
  }
  return points;
}
