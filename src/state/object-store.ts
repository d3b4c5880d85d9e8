// The little a shared state store needs from an object store (S3 and anything with its conditional
// writes), so the store logic stays free of any SDK and runs against memory in unit tests.
// Keys are relative to the store's root (`s3://bucket/prefix/`); bodies are UTF-8 text (JSON).

export interface StoredObject {
  body: string;
  /** Opaque version token; S3 returns it quoted, and that is how it is handed back. */
  etag: string;
}

export interface ListResult {
  /** Keys under the prefix, in lexicographic (UTF-8 byte) order. */
  keys: string[];
  /** With a delimiter: each distinct `prefix…delimiter` that keys roll up into, like S3's CommonPrefixes. */
  prefixes: string[];
}

export interface ObjectStore {
  /** Where the objects live, for messages (`s3://bucket/prefix`). */
  readonly url: string;
  get(key: string): Promise<StoredObject | undefined>;
  /** Creates the object only if no object has the key (`If-None-Match: *`); returns the new etag. */
  putIfAbsent(key: string, body: string): Promise<string>;
  /** Replaces the object only if its etag is still `etag` (`If-Match`); returns the new etag. */
  putIfMatch(key: string, body: string, etag: string): Promise<string>;
  /** Deletes the object (only if its etag is `etag`, when given); a missing object is not an error. */
  delete(key: string, etag?: string): Promise<void>;
  /** Every key under `prefix` (all pages); with `delimiter`, keys containing it after the prefix roll up. */
  list(prefix: string, delimiter?: string): Promise<ListResult>;
  /** Releases connections; the store is not used afterwards. */
  close?(): void;
}

/**
 * A conditional put that tolerates its own retries: when the condition fails because an earlier
 * attempt of this very write landed (the client retried after a lost response), the stored body is
 * byte-identical to ours and the write counts as done. Bodies must therefore be unique per write
 * (a holder, an epoch, a time or a nonce in them), which every writer in runctl ensures.
 */
export async function conditionalPut(store: ObjectStore, key: string, body: string, etag: string | undefined): Promise<string> {
  try {
    return etag === undefined ? await store.putIfAbsent(key, body) : await store.putIfMatch(key, body, etag);
  } catch (err) {
    if (!(err instanceof PreconditionFailed)) throw err;
    const now = await store.get(key);
    if (now && now.body === body) return now.etag;
    throw err;
  }
}

/**
 * A conditional write or delete found the object not as expected (S3 412 Precondition Failed, 409
 * ConditionalRequestConflict, or the object is gone): someone else changed it first.
 */
export class PreconditionFailed extends Error {
  constructor(
    readonly key: string,
    readonly condition: 'absent' | 'match',
    detail?: string,
  ) {
    super(
      condition === 'absent'
        ? `${key} already exists${detail ? ` (${detail})` : ''}`
        : `${key} changed since it was read${detail ? ` (${detail})` : ''}`,
    );
    this.name = 'PreconditionFailed';
  }
}

export interface S3Location {
  bucket: string;
  /** '' or a prefix ending in '/'. */
  prefix: string;
}

const BUCKET = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

/** Parses `--state s3://bucket/prefix` (or `state:` in runctl.yaml) with an error that says what is valid. */
export function parseStateUrl(url: string, from = '--state'): S3Location {
  const m = /^s3:\/\/([^/]+)(?:\/(.*))?$/.exec(url.trim());
  if (!m) {
    throw new InvalidStateUrlError(`${from} ${JSON.stringify(url)} is not a shared state location: use s3://bucket/prefix (for example s3://my-team-runctl/state), or leave it out to keep state in .runctl/`);
  }
  const bucket = m[1] ?? '';
  if (!BUCKET.test(bucket) || bucket.includes('..')) {
    throw new InvalidStateUrlError(`${from} ${JSON.stringify(url)}: "${bucket}" is not a valid S3 bucket name (3-63 characters: lowercase letters, digits, '.' and '-', starting and ending with a letter or digit)`);
  }
  const prefix = (m[2] ?? '').replace(/^\/+|\/+$/g, '');
  if (prefix && prefix.split('/').some((part) => part === '' || part === '.' || part === '..')) {
    throw new InvalidStateUrlError(`${from} ${JSON.stringify(url)}: the prefix "${prefix}" has an empty, '.' or '..' path segment`);
  }
  return { bucket, prefix: prefix ? `${prefix}/` : '' };
}

export class InvalidStateUrlError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InvalidStateUrlError';
  }
}
