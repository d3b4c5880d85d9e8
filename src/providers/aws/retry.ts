// Retries happen in exactly one place per kind of failure, so they never multiply:
// - throttling, 5xx and network errors: inside the SDK client, by `BoundedRetryStrategy` (exponential
//   backoff with full jitter, a bounded number of attempts); when it gives up, the error is classified
//   as RetryableError and the reconciler requeues the run with its own backoff;
// - "not there yet" conditions the SDK cannot know are transient (an instance not yet registered
//   with SSM, a command invocation not yet visible): `pollUntil`, against a wall-clock deadline.
import { isTransient, isThrottling } from './errors.js';

export interface RetryOptions {
  /** Total attempts per SDK call, the first included. */
  maxAttempts: number;
  /** Base of the exponential backoff; throttling uses five times this. */
  baseDelayMs: number;
  maxDelayMs: number;
}

export const DEFAULT_RETRY: RetryOptions = { maxAttempts: 5, baseDelayMs: 100, maxDelayMs: 20_000 };

/** Full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter"): uniform in [0, min(cap, base·2^n)). */
export function backoffDelay(retry: number, base: number, cap: number, random: () => number = Math.random): number {
  return Math.floor(random() * Math.min(cap, base * 2 ** retry));
}

// Structural copies of the Smithy RetryStrategyV2 shapes, so no undeclared package is imported.
interface RetryToken {
  getRetryCount(): number;
  getRetryDelay(): number;
}
interface RetryErrorInfo {
  error?: unknown;
  errorType: string;
  retryAfterHint?: Date;
}

class Token implements RetryToken {
  constructor(
    private readonly count: number,
    private readonly delay: number,
  ) {}
  getRetryCount(): number {
    return this.count;
  }
  getRetryDelay(): number {
    return this.delay;
  }
}

/** An SDK v3 retry strategy that retries only what `isTransient` calls transient, a bounded number of times. */
export class BoundedRetryStrategy {
  readonly mode = 'standard';
  constructor(private readonly opts: RetryOptions = DEFAULT_RETRY) {}

  async acquireInitialRetryToken(_scope: string): Promise<RetryToken> {
    return new Token(0, 0);
  }

  async refreshRetryTokenForRetry(token: RetryToken, info: RetryErrorInfo): Promise<RetryToken> {
    const next = token.getRetryCount() + 1;
    const error = info.error ?? { name: info.errorType };
    if (next >= this.opts.maxAttempts || !isTransient(error)) throw error;
    const base = isThrottling(error) ? this.opts.baseDelayMs * 5 : this.opts.baseDelayMs;
    let delay = backoffDelay(next, base, this.opts.maxDelayMs);
    if (info.retryAfterHint) {
      const hinted = info.retryAfterHint.getTime() - Date.now();
      delay = Math.min(this.opts.maxDelayMs, Math.max(delay, hinted));
    }
    return new Token(next, delay);
  }

  recordSuccess(_token: RetryToken): void {}
}

export class DeadlineExceeded extends Error {
  constructor(
    message: string,
    readonly last?: unknown,
  ) {
    super(message);
    this.name = 'DeadlineExceeded';
  }
}

/**
 * Calls `attempt` until it returns a value other than undefined, sleeping `intervalMs` between
 * calls, until the wall-clock `deadline` (epoch ms). Errors for which `keepTrying` is true count as
 * "not yet"; any other error is thrown at once.
 */
export async function pollUntil<T>(
  attempt: () => Promise<T | undefined>,
  opts: { deadline: number; intervalMs: number; what: string; keepTrying?: (err: unknown) => boolean },
): Promise<T> {
  let last: unknown;
  for (;;) {
    try {
      const value = await attempt();
      if (value !== undefined) return value;
    } catch (err) {
      if (!opts.keepTrying?.(err)) throw err;
      last = err;
    }
    const left = opts.deadline - Date.now();
    if (left <= 0) throw new DeadlineExceeded(`timed out waiting for ${opts.what}`, last);
    await new Promise((resolve) => setTimeout(resolve, Math.min(opts.intervalMs, left)));
  }
}
