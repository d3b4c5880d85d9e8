// The key layout inside `checkpoints.storage`, shared by the agent (which writes it) and the
// providers (which read it). Keys are relative to the storage root (`s3://bucket/prefix` or
// `file:///abs/dir`) and always use forward slashes.
//
//   bundles/<sha256>.tar.gz                          content-addressed code bundles
//   runs/<run>/g<gen>/a<attempt>/status.json         agent heartbeat/status (AgentStatus)
//   runs/<run>/g<gen>/a<attempt>/control.json        controller -> agent requests (StopRequest)
//   runs/<run>/g<gen>/a<attempt>/logs/<seq>.log      log segments, 8-digit seq, append-only
//   runs/<run>/g<gen>/checkpoints/<id>/<files>       checkpoint files, uploaded first
//   runs/<run>/g<gen>/checkpoints/<id>/MANIFEST.json written last: a checkpoint without it does not exist
import type { AttemptKey } from '../providers/types.js';

export const MANIFEST_NAME = 'MANIFEST.json';

export function bundleKey(sha256: string): string {
  return `bundles/${sha256}.tar.gz`;
}

export function generationPrefix(run: string, generation: number): string {
  return `runs/${run}/g${generation}`;
}

export function attemptPrefix(key: AttemptKey): string {
  return `${generationPrefix(key.run, key.generation)}/a${key.attempt}`;
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

export function checkpointsPrefix(run: string, generation: number): string {
  return `${generationPrefix(run, generation)}/checkpoints/`;
}

export function manifestKey(run: string, generation: number, id: string): string {
  return `${checkpointsPrefix(run, generation)}${id}/${MANIFEST_NAME}`;
}

/** Checkpoint and log segment ids are zero-padded so lexical order is numeric order. */
export function padSeq(n: number): string {
  return String(n).padStart(8, '0');
}
