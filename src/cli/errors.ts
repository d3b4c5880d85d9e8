/**
 * Bad arguments: printed without a stack trace. Exit code 2, unless a command needs another one
 * (`plan --detailed-exitcode` keeps 2 for "changes", so its usage errors exit 1, like Terraform's).
 * An empty message means the problem was already printed (commander prints its own).
 */
export class UsageError extends Error {
  constructor(
    message: string,
    readonly exitCode = 2,
  ) {
    super(message);
    this.name = 'UsageError';
  }
}
