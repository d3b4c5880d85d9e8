// One webhook POST, with node:http/https rather than the global fetch: the delivery guarantee
// (docs/notifications.md) needs to know the moment the whole request has been handed to the
// network (the ClientRequest 'finish' event), which fetch does not expose. No retries here: the
// notifier owns them, so each attempt is recorded in the event log.
import http from 'node:http';
import https from 'node:https';

export interface PostResult {
  /** HTTP status, when an answer came. */
  status?: number;
  /** Seconds to wait before trying again, from Retry-After (Slack and Discord send it with 429). */
  retryAfterSeconds?: number;
  /** The first 200 characters of the answer's body (shown in failure events, redacted). */
  bodySnippet?: string;
  /** No answer: what went wrong (connection refused, timed out, aborted). */
  error?: string;
  timedOut?: boolean;
  /** True once the whole request was written to the network: the receiver may have it. */
  handedOff: boolean;
}

export interface PostOptions {
  headers: Record<string, string>;
  /** Milliseconds from the start until an answer's headers must have arrived. */
  timeoutMs: number;
  signal?: AbortSignal;
  /** Called once, when the whole request has been handed to the network. */
  onHandedOff?(): void;
}

/** POSTs `body` (JSON) to `url`. Never throws: every outcome is a PostResult. */
export function postJson(url: URL, body: string, opts: PostOptions): Promise<PostResult> {
  return new Promise((resolve) => {
    let handedOff = false;
    let settled = false;
    const done = (r: Omit<PostResult, 'handedOff'>) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      resolve({ ...r, handedOff });
    };
    const client = url.protocol === 'https:' ? https : http;
    let req: http.ClientRequest;
    try {
      req = client.request(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)), ...opts.headers },
        // One connection per delivery: nothing lingers after the controller stops.
        agent: false,
      });
    } catch (err) {
      resolve({ error: (err as Error).message, handedOff: false });
      return;
    }
    // First of all: a request destroyed before any other listener is attached (the controller
    // stopping) emits 'error', which unhandled would end the process.
    req.on('error', (err) => done({ error: err.message }));
    const timer = setTimeout(() => {
      done({ error: `no answer within ${Math.round(opts.timeoutMs / 1000)}s`, timedOut: true });
      req.destroy();
    }, opts.timeoutMs);
    const onAbort = () => {
      done({ error: 'the controller stopped before an answer came' });
      req.destroy();
    };
    if (opts.signal?.aborted) {
      onAbort();
      return;
    }
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    req.on('finish', () => {
      handedOff = true;
      opts.onHandedOff?.();
    });
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        if (size < 4096) chunks.push(c);
        size += c.length;
      });
      const finish = () => {
        const retryAfter = Number(res.headers['retry-after']);
        done({
          status: res.statusCode,
          ...(Number.isFinite(retryAfter) && retryAfter >= 0 ? { retryAfterSeconds: retryAfter } : {}),
          bodySnippet: Buffer.concat(chunks).toString('utf8').slice(0, 200),
        });
      };
      res.on('end', finish);
      res.on('error', finish);
      res.on('aborted', finish);
    });
    req.end(body);
  });
}
