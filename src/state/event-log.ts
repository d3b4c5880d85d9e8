// The per-run event log: one JSON event per line, append-only. A crash mid-append can leave a
// last line without its newline; that event was never acknowledged (the status outbox still holds
// it and appends it again), so readers skip it and the writer cuts it off before appending.
import { promises as fs } from 'node:fs';
import type { RunEvent } from './types.js';

/** A line in the middle of an event log is not valid JSON: someone edited it or the disk lied. */
export class StateCorruptError extends Error {
  constructor(
    message: string,
    readonly file: string,
    readonly line: number,
  ) {
    super(message);
    this.name = 'StateCorruptError';
  }
}

export interface ParsedLog {
  events: RunEvent[];
  /** Byte length of the complete lines; anything after it is a torn append. */
  completeBytes: number;
  totalBytes: number;
}

export async function readLog(file: string): Promise<ParsedLog> {
  let buf: Buffer;
  try {
    buf = await fs.readFile(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { events: [], completeBytes: 0, totalBytes: 0 };
    throw err;
  }
  const completeBytes = buf.lastIndexOf(0x0a) + 1;
  const text = buf.subarray(0, completeBytes).toString('utf8');
  const events: RunEvent[] = [];
  let lineNo = 0;
  for (const line of text.split('\n')) {
    lineNo++;
    if (line.trim() === '') continue;
    let parsed: unknown;
    try {
      parsed = JSON.parse(line);
    } catch {
      throw corrupt(file, lineNo, 'is not valid JSON');
    }
    if (!parsed || typeof parsed !== 'object' || typeof (parsed as RunEvent).id !== 'string') {
      throw corrupt(file, lineNo, 'is not an event (no string "id")');
    }
    events.push(parsed as RunEvent);
  }
  return { events, completeBytes, totalBytes: buf.length };
}

/** Cuts off a torn last line so the next append starts on a line of its own. */
export async function repairTornTail(file: string, log: ParsedLog): Promise<void> {
  if (log.totalBytes > log.completeBytes) await fs.truncate(file, log.completeBytes);
}

export async function appendLines(file: string, events: RunEvent[], fsync: boolean): Promise<void> {
  const data = events.map((e) => `${JSON.stringify(e)}\n`).join('');
  const handle = await fs.open(file, 'a', 0o644);
  try {
    await handle.writeFile(data, 'utf8');
    if (fsync) await handle.sync();
  } finally {
    await handle.close();
  }
}

function corrupt(file: string, line: number, what: string): StateCorruptError {
  return new StateCorruptError(
    `${file}:${line}: event log line ${what}; move the file aside (runctl starts a new log) or fix that line`,
    file,
    line,
  );
}
