// The local provider's storage: a folder (`file:///abs/dir`) with the key layout of
// src/agent/layout.ts, written by the agent and read here: status, control requests, checkpoints,
// log segments, code bundles.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { bundleKey, checkpointsPrefix, controlKey, logsPrefix, manifestKey, progressKey, statusKey } from '../../agent/layout.js';
import { parseProgressDocument, ProgressDocumentError } from '../../agent/progress-document.js';
import type { RunSpec } from '../../spec/types.js';
import type { StoredObject } from '../bundle-gc.js';
import { RetryableError, TerminalError, type AgentStatus, type AttemptKey, type CheckpointManifest, type LogChunk, type LogReadOptions, type ProgressPoint, type StopReason } from '../types.js';
import { fsCall } from './errors.js';
import { errnoCode, exists, tempPathFor, writeJsonAtomic } from './fs-util.js';

/** Most log text one readLogs call returns; the cursor continues from there. */
export const LOG_CHUNK_BYTES = 1024 * 1024;

export class LocalStorage {
  constructor(readonly root: string) {}

  /** spec.checkpoints.storage when set (file:// only), else the provider's default folder. */
  static forSpec(spec: RunSpec, defaultRoot: string): LocalStorage {
    const url = spec.checkpoints.storage;
    if (url === undefined) return new LocalStorage(path.resolve(defaultRoot));
    if (!url.startsWith('file://')) {
      throw new TerminalError(
        `spec.checkpoints.storage is "${url}", but the local provider keeps storage in a folder: ` +
          'use a file:///absolute/path URL, or leave it out to use .runctl/local/storage',
        { code: 'UnsupportedStorage' },
      );
    }
    let dir: string;
    try {
      dir = fileURLToPath(url);
    } catch {
      throw new TerminalError(`spec.checkpoints.storage "${url}" is not a valid file URL: write it as file:///absolute/path`, {
        code: 'InvalidStorage',
      });
    }
    return new LocalStorage(dir);
  }

  /** The URL the agent is given. */
  get url(): string {
    return pathToFileURL(this.root).href;
  }

  path(key: string): string {
    const parts = key.split('/').filter(Boolean);
    if (parts.some((p) => p === '..' || p === '.')) throw new TerminalError(`unsafe storage key "${key}"`, { code: 'InvalidKey' });
    return path.join(this.root, ...parts);
  }

  async readAgentStatus(key: AttemptKey): Promise<AgentStatus | undefined> {
    const file = this.path(statusKey(key));
    const text = await this.readText(file, 'reading the agent status');
    if (text === undefined) return undefined;
    try {
      return JSON.parse(text) as AgentStatus;
    } catch {
      throw new RetryableError(`agent status ${file} is not valid JSON; it is read again on the next pass`, { code: 'BadStatus' });
    }
  }

  /** The attempt's progress history (src/agent/progress-document.ts), or undefined when none is stored. */
  async readProgressHistory(key: AttemptKey): Promise<ProgressPoint[] | undefined> {
    const file = this.path(progressKey(key));
    const text = await this.readText(file, 'reading the progress history');
    if (text === undefined) return undefined;
    try {
      return parseProgressDocument(text, file);
    } catch (err) {
      if (err instanceof ProgressDocumentError) throw new RetryableError(err.message, { code: 'BadProgressHistory' });
      throw err;
    }
  }

  async writeStopRequest(key: AttemptKey, reason: StopReason): Promise<void> {
    const file = this.path(controlKey(key));
    await fsCall('writing the stop request', file, async () => {
      await fs.mkdir(path.dirname(file), { recursive: true });
      await writeJsonAtomic(file, { action: 'stop', reason, ...key, at: new Date().toISOString() });
    });
  }

  async latestCheckpoint(run: string, generation: number, uid?: string): Promise<CheckpointManifest | undefined> {
    const dir = this.path(checkpointsPrefix(run, generation, uid));
    const ids = (await this.listNames(dir, 'listing checkpoints')).filter((n) => /^\d+$/.test(n)).sort().reverse();
    // Newest first; a checkpoint folder without its manifest is still uploading (or abandoned).
    for (const id of ids) {
      const text = await this.readText(this.path(manifestKey(run, generation, id, uid)), 'reading a checkpoint manifest');
      if (text === undefined) continue;
      try {
        return JSON.parse(text) as CheckpointManifest;
      } catch {
        continue;
      }
    }
    return undefined;
  }

  /**
   * Log text after `cursor`. The cursor is `<segment file>:<byte offset>` of the last byte read, so
   * a segment that grows after it was read is continued, not repeated.
   */
  async readLogs(key: AttemptKey, cursor?: string, opts: LogReadOptions = {}): Promise<LogChunk> {
    const dir = this.path(logsPrefix(key));
    const from = parseLogCursor(cursor);
    const segments = (await this.listNames(dir, 'listing log segments')).filter((n) => /^\d+\.log$/.test(n)).sort();
    const chunks: Buffer[] = [];
    let budget = LOG_CHUNK_BYTES;
    let last = from;
    for (const name of segments) {
      if (from && name < from.segment) continue;
      const start = from && name === from.segment ? from.offset : 0;
      if (opts.since && start === 0) {
        const stored = await this.modifiedAt(path.join(dir, name));
        if (stored === undefined) break;
        if (stored < opts.since) {
          last = { segment: name, offset: await this.sizeOf(path.join(dir, name)) };
          continue;
        }
      }
      const data = await this.readBytes(path.join(dir, name), start, budget);
      if (data === undefined) break;
      if (data.length === 0) {
        last = { segment: name, offset: start };
        continue;
      }
      // Cut a partial read at its last newline so no UTF-8 character is split between chunks.
      let take = data;
      if (data.length === budget) {
        const cut = data.lastIndexOf(0x0a);
        if (cut >= 0) take = data.subarray(0, cut + 1);
      }
      chunks.push(take);
      budget -= take.length;
      last = { segment: name, offset: start + take.length };
      if (budget <= 0 || take.length < data.length) break;
    }
    return { attempt: key.attempt, cursor: last ? `${last.segment}:${last.offset}` : '', text: Buffer.concat(chunks).toString('utf8') };
  }

  /** Copies a code bundle in under its content address unless it is there already. Returns bytes copied. */
  async putBundle(sha256: string, file: string): Promise<number> {
    const target = this.path(bundleKey(sha256));
    return fsCall('storing the code bundle', target, async () => {
      if (await exists(target)) return 0;
      await fs.mkdir(path.dirname(target), { recursive: true });
      const temp = tempPathFor(target);
      try {
        await fs.copyFile(file, temp);
        await fs.rename(temp, target);
      } catch (err) {
        await fs.rm(temp, { force: true });
        throw err;
      }
      return (await fs.stat(target)).size;
    });
  }

  /** Every object under bundles/, with when it was stored. */
  async listBundles(): Promise<StoredObject[]> {
    const dir = this.path('bundles');
    const out: StoredObject[] = [];
    for (const name of await this.listNames(dir, 'listing the code bundles')) {
      const key = `bundles/${name}`;
      const stat = await fsCall('reading a code bundle', this.path(key), async () => {
        try {
          return await fs.stat(this.path(key));
        } catch (err) {
          if (errnoCode(err) === 'ENOENT') return undefined;
          throw err;
        }
      });
      if (stat?.isFile()) out.push({ key, modifiedAt: stat.mtime });
    }
    return out;
  }

  /** Every object under `prefix` (a folder key ending in /), recursively, with its modification time. */
  async listObjects(prefix: string): Promise<StoredObject[]> {
    const out: StoredObject[] = [];
    const walk = async (rel: string): Promise<void> => {
      const dir = this.path(rel);
      for (const name of await this.listNames(dir, 'listing the setup cache')) {
        const key = `${rel}${name}`;
        const stat = await fsCall('reading the setup cache', this.path(key), async () => {
          try {
            return await fs.lstat(this.path(key));
          } catch (err) {
            if (errnoCode(err) === 'ENOENT') return undefined;
            throw err;
          }
        });
        if (stat?.isDirectory()) await walk(`${key}/`);
        else if (stat?.isFile()) out.push({ key, modifiedAt: stat.mtime });
      }
    };
    await walk(prefix);
    return out;
  }

  /** The text of an object, or undefined when it is missing. */
  async readObject(key: string): Promise<string | undefined> {
    return this.readText(this.path(key), 'reading a setup cache entry');
  }

  async deleteObject(key: string): Promise<void> {
    await fsCall('deleting a code bundle', this.path(key), () => fs.rm(this.path(key), { force: true }));
  }

  async ensureRoot(): Promise<void> {
    await fsCall('creating the storage folder', this.root, () => fs.mkdir(this.root, { recursive: true }));
  }

  private async readText(file: string, what: string): Promise<string | undefined> {
    return fsCall(what, file, async () => {
      try {
        return await fs.readFile(file, 'utf8');
      } catch (err) {
        if (errnoCode(err) === 'ENOENT') return undefined;
        throw err;
      }
    });
  }

  private async modifiedAt(file: string): Promise<Date | undefined> {
    return (await this.statOf(file))?.mtime;
  }

  private async sizeOf(file: string): Promise<number> {
    return (await this.statOf(file))?.size ?? 0;
  }

  private async statOf(file: string) {
    return fsCall('reading a log segment', file, async () => {
      try {
        return await fs.stat(file);
      } catch (err) {
        if (errnoCode(err) === 'ENOENT') return undefined;
        throw err;
      }
    });
  }

  private async readBytes(file: string, offset: number, max: number): Promise<Buffer | undefined> {
    return fsCall('reading a log segment', file, async () => {
      let handle: fs.FileHandle;
      try {
        handle = await fs.open(file, 'r');
      } catch (err) {
        if (errnoCode(err) === 'ENOENT') return undefined;
        throw err;
      }
      try {
        const size = (await handle.stat()).size;
        const length = Math.max(0, Math.min(max, size - offset));
        const buf = Buffer.alloc(length);
        if (length > 0) await handle.read(buf, 0, length, offset);
        return buf;
      } finally {
        await handle.close();
      }
    });
  }

  private async listNames(dir: string, what: string): Promise<string[]> {
    return fsCall(what, dir, async () => {
      try {
        return await fs.readdir(dir);
      } catch (err) {
        if (errnoCode(err) === 'ENOENT') return [];
        throw err;
      }
    });
  }
}

function parseLogCursor(cursor: string | undefined): { segment: string; offset: number } | undefined {
  if (cursor === undefined || cursor === '') return undefined;
  const m = /^(\d+\.log):(\d+)$/.exec(cursor);
  if (!m) {
    throw new TerminalError(`log cursor "${cursor}" was not made by the local provider; start again without a cursor`, { code: 'InvalidCursor' });
  }
  return { segment: m[1] as string, offset: Number(m[2]) };
}
