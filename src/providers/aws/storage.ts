// S3 under `checkpoints.storage` (s3://bucket/prefix), with the key layout of src/agent/layout.ts.
// Reads are as cheap as S3 allows: a status read is one conditional GET (If-None-Match on the
// last ETag; 304 means unchanged and costs no body), bundles are checked with one HEAD.
import { createReadStream } from 'node:fs';
import {
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  type S3Client,
  type _Object,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { TerminalError } from '../types.js';
import { awsCall, errorCode, httpStatus } from './errors.js';

export interface StorageLocation {
  bucket: string;
  /** '' or a prefix ending in '/'. */
  prefix: string;
}

const BUCKET = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

export function parseStorageUrl(url: string | undefined): StorageLocation {
  const m = url?.match(/^s3:\/\/([^/]+)\/?(.*)$/);
  if (!m || !m[1] || !BUCKET.test(m[1])) {
    throw new TerminalError(
      `spec.checkpoints.storage ${url === undefined ? 'is not set' : `"${url}" is not an S3 URL`}: the aws provider needs ` +
        's3://bucket/prefix (or `defaults.storage` in runctl.yaml)',
      { code: 'InvalidStorage' },
    );
  }
  const prefix = (m[2] ?? '').replace(/\/+$/, '');
  return { bucket: m[1], prefix: prefix ? `${prefix}/` : '' };
}

export type ConditionalRead =
  | { kind: 'missing' }
  | { kind: 'unchanged' }
  | { kind: 'found'; etag?: string; body: string };

export class S3Storage {
  constructor(
    readonly s3: S3Client,
    readonly location: StorageLocation,
    private readonly region: string,
  ) {}

  /** Full object key for a key relative to the storage root. */
  key(relative: string): string {
    return `${this.location.prefix}${relative}`;
  }

  url(relative: string): string {
    return `s3://${this.location.bucket}/${this.key(relative)}`;
  }

  private ctx(operation: string) {
    return { service: 's3' as const, operation, region: this.region };
  }

  async exists(relative: string): Promise<boolean> {
    try {
      await this.s3.send(new HeadObjectCommand({ Bucket: this.location.bucket, Key: this.key(relative) }));
      return true;
    } catch (err) {
      if (httpStatus(err) === 404 || errorCode(err) === 'NotFound' || errorCode(err) === 'NoSuchKey') return false;
      return awsCall(this.ctx('HeadObject'), () => Promise.reject(err));
    }
  }

  /** Streams a file up; lib-storage switches to multipart above one part (8 MiB) and cleans up on failure. */
  async uploadFile(relative: string, file: string, contentType: string): Promise<void> {
    await awsCall(this.ctx('PutObject'), () =>
      new Upload({
        client: this.s3,
        params: { Bucket: this.location.bucket, Key: this.key(relative), Body: createReadStream(file), ContentType: contentType },
        partSize: 8 * 1024 * 1024,
        queueSize: 4,
        leavePartsOnError: false,
      }).done(),
    );
  }

  async putText(relative: string, body: string, contentType = 'application/json'): Promise<void> {
    await awsCall(this.ctx('PutObject'), () =>
      this.s3.send(new PutObjectCommand({ Bucket: this.location.bucket, Key: this.key(relative), Body: body, ContentType: contentType })),
    );
  }

  /** GET, conditional on `etag` when given: one request whatever the outcome. */
  async getConditional(relative: string, etag?: string): Promise<ConditionalRead> {
    try {
      const out = await this.s3.send(
        new GetObjectCommand({ Bucket: this.location.bucket, Key: this.key(relative), ...(etag ? { IfNoneMatch: etag } : {}) }),
      );
      const body = (await out.Body?.transformToString('utf8')) ?? '';
      return { kind: 'found', etag: out.ETag, body };
    } catch (err) {
      const status = httpStatus(err);
      if (status === 304 || errorCode(err) === 'NotModified') return { kind: 'unchanged' };
      if (status === 404 || errorCode(err) === 'NoSuchKey') return { kind: 'missing' };
      return awsCall(this.ctx('GetObject'), () => Promise.reject(err));
    }
  }

  async getText(relative: string): Promise<string | undefined> {
    const read = await this.getConditional(relative);
    return read.kind === 'found' ? read.body : undefined;
  }

  /** Objects under a relative prefix, paginated; keys are returned relative to the storage root. */
  async list(relativePrefix: string, opts: { startAfter?: string; limit?: number } = {}): Promise<(_Object & { Key: string })[]> {
    const out: (_Object & { Key: string })[] = [];
    let token: string | undefined;
    do {
      const page = await awsCall(this.ctx('ListObjectsV2'), () =>
        this.s3.send(
          new ListObjectsV2Command({
            Bucket: this.location.bucket,
            Prefix: this.key(relativePrefix),
            ...(opts.startAfter && !token ? { StartAfter: this.key(opts.startAfter) } : {}),
            ContinuationToken: token,
            ...(opts.limit ? { MaxKeys: Math.min(1000, opts.limit - out.length) } : {}),
          }),
        ),
      );
      for (const o of page.Contents ?? []) {
        if (o.Key) out.push({ ...o, Key: o.Key.slice(this.location.prefix.length) });
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token && (!opts.limit || out.length < opts.limit));
    return out;
  }

  /** The next path segment under a relative prefix (S3 "directories"), relative names without slashes. */
  async listDirectories(relativePrefix: string): Promise<string[]> {
    const names: string[] = [];
    let token: string | undefined;
    do {
      const page = await awsCall(this.ctx('ListObjectsV2'), () =>
        this.s3.send(
          new ListObjectsV2Command({ Bucket: this.location.bucket, Prefix: this.key(relativePrefix), Delimiter: '/', ContinuationToken: token }),
        ),
      );
      for (const p of page.CommonPrefixes ?? []) {
        const name = p.Prefix?.slice(this.key(relativePrefix).length).replace(/\/$/, '');
        if (name) names.push(name);
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return names;
  }

  async deleteMany(relativeKeys: string[]): Promise<void> {
    for (let i = 0; i < relativeKeys.length; i += 1000) {
      const chunk = relativeKeys.slice(i, i + 1000);
      const out = await awsCall(this.ctx('DeleteObjects'), () =>
        this.s3.send(
          new DeleteObjectsCommand({
            Bucket: this.location.bucket,
            Delete: { Objects: chunk.map((k) => ({ Key: this.key(k) })), Quiet: true },
          }),
        ),
      );
      const failed = out.Errors?.[0];
      if (failed) {
        throw new TerminalError(`S3 DeleteObjects could not delete ${failed.Key}: ${failed.Code} ${failed.Message ?? ''}`.trim(), {
          code: failed.Code,
        });
      }
    }
  }
}
