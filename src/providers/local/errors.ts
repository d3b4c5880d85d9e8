// Translates file-system and process errors of the local provider into the port's error classes:
// the reconciler retries RetryableError and stops with TerminalError, whose message says what to do.
import { ProviderError, RetryableError, TerminalError } from '../types.js';
import { errnoCode } from './fs-util.js';

const RETRYABLE = new Set(['EAGAIN', 'EBUSY', 'EINTR', 'EMFILE', 'ENFILE', 'ETIMEDOUT', 'ECONNRESET', 'ECONNREFUSED', 'ENOENT']);

/** `what` says what the provider was doing, e.g. "writing the agent config". */
export function classifyFsError(err: unknown, what: string, file?: string): ProviderError {
  if (err instanceof ProviderError) return err;
  const code = errnoCode(err);
  const where = file ? ` (${file})` : '';
  const detail = err instanceof Error ? err.message : String(err);
  switch (code) {
    case 'ENOSPC':
    case 'EDQUOT':
      return new TerminalError(`no space left on the device while ${what}${where}: free disk space (old sandboxes live under .runctl/local/instances) and reconcile again`, { code, cause: err });
    case 'EACCES':
    case 'EPERM':
      return new TerminalError(`permission denied while ${what}${where}: make the directory writable by this user, or choose another local provider root`, { code, cause: err });
    case 'EROFS':
      return new TerminalError(`read-only file system while ${what}${where}: choose a writable local provider root or storage folder`, { code, cause: err });
    case 'ENAMETOOLONG':
      return new TerminalError(`path too long while ${what}${where}: use a shorter local provider root`, { code, cause: err });
    case 'ENOTDIR':
    case 'EISDIR':
      return new TerminalError(`unexpected file type while ${what}${where}: ${detail}; remove the conflicting file`, { code, cause: err });
    default:
      if (code && RETRYABLE.has(code)) return new RetryableError(`${what}${where} failed: ${detail}`, { code, cause: err });
      return new RetryableError(`${what}${where} failed: ${detail}`, { code: code ?? 'LocalError', cause: err });
  }
}

/** Runs `fn`, reclassifying whatever it throws. */
export async function fsCall<T>(what: string, file: string | undefined, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw classifyFsError(err, what, file);
  }
}
