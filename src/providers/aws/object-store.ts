// The ObjectStore port (src/state/object-store.ts) over S3, for the shared state store. Conditional
// writes are S3's own: `If-None-Match: *` to create, `If-Match: <etag>` to replace or delete. A lost
// condition (412, or 409 ConditionalRequestConflict when two conditional requests race) becomes
// PreconditionFailed; every other failure is classified (throttling and 5xx were already retried
// with bounded backoff inside the client, so what reaches here is RetryableError or TerminalError).
import {
  DeleteObjectCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type ListObjectsV2CommandOutput,
} from '@aws-sdk/client-s3';
import { PreconditionFailed, parseStateUrl, type ListResult, type ObjectStore, type S3Location, type StoredObject } from '../../state/object-store.js';
import { TerminalError } from '../types.js';
import { chainRegion, customEndpoint, type ClientOptions } from './clients.js';
import { classifyAwsError, errorCode, httpStatus, requestIdOf } from './errors.js';
import { BoundedRetryStrategy, DEFAULT_RETRY } from './retry.js';

export class S3ObjectStore implements ObjectStore {
  constructor(
    readonly s3: S3Client,
    readonly location: S3Location,
    /** Keys per ListObjectsV2 page; S3's maximum (1000) unless a test wants to see paging. */
    private readonly listPageSize = 1000,
  ) {}

  get url(): string {
    return `s3://${this.location.bucket}/${this.location.prefix}`.replace(/\/$/, '');
  }

  async get(key: string): Promise<StoredObject | undefined> {
    try {
      const res = await this.s3.send(new GetObjectCommand({ Bucket: this.location.bucket, Key: this.fullKey(key) }));
      const body = (await res.Body?.transformToString('utf-8')) ?? '';
      return { body, etag: res.ETag ?? '' };
    } catch (err) {
      if (errorCode(err) === 'NoSuchKey') return undefined;
      throw this.classify(err, 'GetObject', key);
    }
  }

  async putIfAbsent(key: string, body: string): Promise<string> {
    return this.put(key, body, { IfNoneMatch: '*' }, 'absent');
  }

  async putIfMatch(key: string, body: string, etag: string): Promise<string> {
    return this.put(key, body, { IfMatch: etag }, 'match');
  }

  async delete(key: string, etag?: string): Promise<void> {
    try {
      await this.s3.send(new DeleteObjectCommand({ Bucket: this.location.bucket, Key: this.fullKey(key), ...(etag ? { IfMatch: etag } : {}) }));
    } catch (err) {
      if (etag && lostCondition(err)) throw new PreconditionFailed(key, 'match', conditionDetail(err));
      if (!etag && errorCode(err) === 'NoSuchKey') return;
      throw this.classify(err, 'DeleteObject', key);
    }
  }

  async list(prefix: string, delimiter?: string): Promise<ListResult> {
    const keys: string[] = [];
    const prefixes: string[] = [];
    let token: string | undefined;
    do {
      let page: ListObjectsV2CommandOutput;
      try {
        page = await this.s3.send(
          new ListObjectsV2Command({
            Bucket: this.location.bucket,
            Prefix: this.fullKey(prefix),
            MaxKeys: this.listPageSize,
            ...(delimiter ? { Delimiter: delimiter } : {}),
            ...(token ? { ContinuationToken: token } : {}),
          }),
        );
      } catch (err) {
        throw this.classify(err, 'ListObjectsV2', prefix);
      }
      for (const o of page.Contents ?? []) if (o.Key) keys.push(this.relativeKey(o.Key));
      for (const p of page.CommonPrefixes ?? []) if (p.Prefix) prefixes.push(this.relativeKey(p.Prefix));
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return { keys, prefixes };
  }

  close(): void {
    this.s3.destroy();
  }

  private async put(key: string, body: string, condition: { IfNoneMatch: string } | { IfMatch: string }, kind: 'absent' | 'match'): Promise<string> {
    try {
      const res = await this.s3.send(
        new PutObjectCommand({ Bucket: this.location.bucket, Key: this.fullKey(key), Body: body, ContentType: 'application/json', ...condition }),
      );
      return res.ETag ?? '';
    } catch (err) {
      if (lostCondition(err)) throw new PreconditionFailed(key, kind, conditionDetail(err));
      throw this.classify(err, 'PutObject', key);
    }
  }

  private fullKey(key: string): string {
    return `${this.location.prefix}${key}`;
  }

  private relativeKey(full: string): string {
    return full.startsWith(this.location.prefix) ? full.slice(this.location.prefix.length) : full;
  }

  private classify(err: unknown, operation: string, key: string): Error {
    if (errorCode(err) === 'NoSuchBucket') {
      return new TerminalError(
        `the state bucket "${this.location.bucket}" does not exist (${operation} ${key}): create it (\`aws s3 mb s3://${this.location.bucket}\`) or point --state at an existing bucket`,
        { code: 'NoSuchBucket', requestId: requestIdOf(err), cause: err },
      );
    }
    const classified = classifyAwsError(err, { service: 's3', operation });
    classified.message = `${classified.message} [${this.url}/${key}]`;
    return classified;
  }
}

/** 412, or 409 when a concurrent conditional request on the same key won; 404 when the object to match is gone. */
function lostCondition(err: unknown): boolean {
  const status = httpStatus(err);
  const code = errorCode(err);
  return status === 412 || status === 409 || code === 'PreconditionFailed' || code === 'ConditionalRequestConflict' || code === 'NoSuchKey';
}

function conditionDetail(err: unknown): string {
  const id = requestIdOf(err);
  return `${errorCode(err) ?? `HTTP ${httpStatus(err)}`}${id ? `, request id ${id}` : ''}`;
}

export interface S3ObjectStoreOptions extends ClientOptions {
  /** Where the URL came from, for error messages (`--state`, `runctl.yaml state:`). */
  from?: string;
  listPageSize?: number;
}

/**
 * An S3ObjectStore for `s3://bucket/prefix`. The client follows region redirects, so the region only
 * has to be a valid one: the given one, else the standard chain's, else us-east-1.
 */
export function createS3ObjectStore(url: string, opts: S3ObjectStoreOptions = {}): S3ObjectStore {
  const location = parseStateUrl(url, opts.from);
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const region = opts.region ?? (async () => chainRegion(opts).catch(() => 'us-east-1'));
  const s3 = new S3Client({
    region,
    retryStrategy: new BoundedRetryStrategy({ ...DEFAULT_RETRY, ...opts.retry }),
    maxAttempts: opts.retry?.maxAttempts ?? DEFAULT_RETRY.maxAttempts,
    forcePathStyle: customEndpoint(opts, 'S3') !== undefined,
    followRegionRedirects: true,
    ...(opts.endpointUrl ? { endpoint: opts.endpointUrl } : {}),
    ...(opts.profile ? { profile: opts.profile } : {}),
    ...(opts.credentials ? { credentials: opts.credentials } : {}),
  });
  return new S3ObjectStore(s3, location, opts.listPageSize);
}
