// Building doctor's check lines, and turning a failed AWS read into one: a read the caller is not
// allowed to make is a warning (nothing is known to be wrong, and the fix is the permission); any
// other failure (credentials, network after the SDK's bounded retries) is a failure.
import { ProviderError } from '../../types.js';
import { gaveUpOn } from '../offerings.js';
import type { DoctorCheck, DoctorStatus } from '../../types.js';

const PERMISSION = new Set(['AccessDenied', 'AccessDeniedException', 'UnauthorizedOperation', 'Forbidden', 'AuthorizationError']);

export function line(check: string, subject: string, runs: readonly string[], status: DoctorStatus, message: string, fix?: string): DoctorCheck {
  return { check, subject, status, message, ...(fix !== undefined && status !== 'pass' ? { fix } : {}), runs: [...new Set(runs)].sort() };
}

export function isDenied(err: unknown): boolean {
  return err instanceof ProviderError && PERMISSION.has(err.code ?? '');
}

/** The line for a check that could not be made: `action` is the IAM action the read needs. */
export function unable(check: string, subject: string, runs: readonly string[], err: unknown, action: string, resource = '*'): DoctorCheck {
  // Doctor is one pass: a transient failure the SDK already retried is not retried again.
  const settled = gaveUpOn(err);
  const message = settled instanceof Error ? settled.message : String(settled);
  if (isDenied(err)) {
    return line(check, subject, runs, 'warn', `could not check: ${message}`, `allow ${action} on ${resource} to whoever runs doctor (\`runctl iam-policy --only controller\` includes it)`);
  }
  return line(check, subject, runs, 'fail', `could not check: ${message}`, 'check the credentials, the region and the network, then run `runctl doctor` again');
}

/** The AWS error code behind a classified error. */
export function codeOf(err: unknown): string | undefined {
  return err instanceof ProviderError ? err.code : undefined;
}
