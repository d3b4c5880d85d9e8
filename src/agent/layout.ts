// The key layout inside `checkpoints.storage`, shared by the agent (which writes it) and the
// providers (which read it). Keys are relative to the storage root (`s3://bucket/prefix` or
// `file:///abs/dir`) and always use forward slashes.
//
//   bundles/<sha256>.tar.gz                          content-addressed code bundles
//   runs/<run>/<uid>/g<gen>/…                        one run incarnation (uid: src/state/identity.ts);
//                                                    a run recorded before uids has no <uid>/ level:
//   runs/<run>/g<gen>/a<attempt>/status.json         agent heartbeat/status (AgentStatus)
//   runs/<run>/g<gen>/a<attempt>/control.json        controller -> agent requests (StopRequest)
//   runs/<run>/g<gen>/a<attempt>/logs/<seq>.log      log segments, 8-digit seq, append-only
//   runs/<run>/g<gen>/a<attempt>/progress.json       progress history (ProgressHistoryDocument), replaced whole
//   runs/<run>/checkpoint-contents/<sha256>          each distinct checkpoint file content, once per run
//   runs/<run>/checkpoint-retired/g<gen>-<id>.json   tombstones of retired manifests (retention's grace)
//   runs/<run>/g<gen>/checkpoints/<id>/MANIFEST.json a checkpoint (format 2): written last, names its
//                                                    files by sha256; without it the checkpoint does not exist
//   runs/<run>/g<gen>/checkpoints/<id>/<files>       format-1 checkpoints only (before issue 9): files
//                                                    beside their manifest; still restored, never written
import type { AttemptKey } from '../providers/types.js';

export const MANIFEST_NAME = 'MANIFEST.json';

export function bundleKey(sha256: string): string {
  return `bundles/${sha256}.tar.gz`;
}

/**
 * `runs/<run>/<uid>` for a run incarnation, `runs/<run>` for a run recorded before uids (uid
 * undefined). The agent applies the same rule (runctl_agent/config.py run_prefix).
 */
export function runPrefix(run: string, uid?: string): string {
  return uid ? `runs/${run}/${uid}` : `runs/${run}`;
}

export function generationPrefix(run: string, generation: number, uid?: string): string {
  return `${runPrefix(run, uid)}/g${generation}`;
}

export function attemptPrefix(key: AttemptKey): string {
  return `${generationPrefix(key.run, key.generation, key.uid)}/a${key.attempt}`;
}

export function statusKey(key: AttemptKey): string {
  return `${attemptPrefix(key)}/status.json`;
}

export function controlKey(key: AttemptKey): string {
  return `${attemptPrefix(key)}/control.json`;
}

export function logsPrefix(key: AttemptKey): string {
  return `${attemptPrefix(key)}/logs/`;
}

/** The attempt's progress history, rewritten whole by the agent at a bounded rate (docs/progress.md). */
export function progressKey(key: AttemptKey): string {
  return `${attemptPrefix(key)}/progress.json`;
}

export function checkpointsPrefix(run: string, generation: number, uid?: string): string {
  return `${generationPrefix(run, generation, uid)}/checkpoints/`;
}

/** Prefix of a run's content store: one object per distinct checkpoint file content, named by sha256. */
export function contentsPrefix(run: string, uid?: string): string {
  return `${runPrefix(run, uid)}/checkpoint-contents/`;
}

/** Key of one stored checkpoint content (sha256 in lowercase hex). */
export function contentKey(run: string, sha256: string, uid?: string): string {
  return `${contentsPrefix(run, uid)}${sha256}`;
}

export function manifestKey(run: string, generation: number, id: string, uid?: string): string {
  return `${checkpointsPrefix(run, generation, uid)}${id}/${MANIFEST_NAME}`;
}

/** Checkpoint and log segment ids are zero-padded so lexical order is numeric order. */
export function padSeq(n: number): string {
  return String(n).padStart(8, '0');
}
