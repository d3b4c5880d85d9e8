// An ObjectStore in memory with S3's semantics where runctl relies on them: etags are the quoted MD5
// of the body (so equal bodies have equal etags, as in S3), If-None-Match / If-Match conditions,
// conditional deletes, lexicographic listing with S3-style delimiters. `beforeRequest` lets a test
// fail, delay or interleave requests; `loseResponse` makes a write land but its response go missing:
// by default the client's automatic retry then meets its own write (412, as from S3), or the given
// error reaches the caller when retries gave up.
import { createHash } from 'node:crypto';
import { PreconditionFailed, type ListResult, type ObjectStore, type StoredObject } from '../../src/state/object-store.js';

export type Operation = 'get' | 'putIfAbsent' | 'putIfMatch' | 'delete' | 'list';

export class MemoryObjectStore implements ObjectStore {
  readonly url: string;
  readonly objects = new Map<string, StoredObject>();
  readonly requests: Array<{ op: Operation; key: string }> = [];
  /** Runs before each request; throw to fail it. */
  beforeRequest?: (op: Operation, key: string) => void | Promise<void>;
  /** Keys whose next write lands and then fails (one shot). */
  private readonly lostResponses = new Map<string, Error | undefined>();

  constructor(url = 's3://memory-bucket/state-test') {
    this.url = url;
  }

  loseResponse(key: string, error?: Error): void {
    this.lostResponses.set(key, error);
  }

  async get(key: string): Promise<StoredObject | undefined> {
    await this.enter('get', key);
    const o = this.objects.get(key);
    return o ? { ...o } : undefined;
  }

  async putIfAbsent(key: string, body: string): Promise<string> {
    await this.enter('putIfAbsent', key);
    if (this.objects.has(key)) throw new PreconditionFailed(key, 'absent', 'memory 412');
    return this.write(key, body);
  }

  async putIfMatch(key: string, body: string, etag: string): Promise<string> {
    await this.enter('putIfMatch', key);
    const current = this.objects.get(key);
    if (!current || current.etag !== etag) throw new PreconditionFailed(key, 'match', current ? 'memory 412' : 'memory 404');
    return this.write(key, body);
  }

  async delete(key: string, etag?: string): Promise<void> {
    await this.enter('delete', key);
    const current = this.objects.get(key);
    if (etag !== undefined && (!current || current.etag !== etag)) throw new PreconditionFailed(key, 'match', 'memory 412');
    this.objects.delete(key);
  }

  async list(prefix: string, delimiter?: string): Promise<ListResult> {
    await this.enter('list', prefix);
    const keys: string[] = [];
    const prefixes = new Set<string>();
    for (const key of [...this.objects.keys()].sort()) {
      if (!key.startsWith(prefix)) continue;
      const at = delimiter ? key.indexOf(delimiter, prefix.length) : -1;
      if (delimiter && at >= 0) prefixes.add(key.slice(0, at + delimiter.length));
      else keys.push(key);
    }
    return { keys, prefixes: [...prefixes] };
  }

  body(key: string): unknown {
    const o = this.objects.get(key);
    return o ? JSON.parse(o.body) : undefined;
  }

  private async enter(op: Operation, key: string): Promise<void> {
    this.requests.push({ op, key });
    await this.beforeRequest?.(op, key);
  }

  private write(key: string, body: string): string {
    const etag = `"${createHash('md5').update(body).digest('hex')}"`;
    this.objects.set(key, { body, etag });
    if (this.lostResponses.has(key)) {
      const error = this.lostResponses.get(key);
      this.lostResponses.delete(key);
      throw error ?? new PreconditionFailed(key, 'match', 'memory 412 on the retry of a write that had landed');
    }
    return etag;
  }
}
