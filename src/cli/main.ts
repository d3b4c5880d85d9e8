// Entry point: builds the command tree and maps outcomes to exit codes. Each command lives in its
// own file and only parses arguments and prints; the work happens in spec/, reconciler/, state/.
import { Command, CommanderError } from 'commander';
import { quietOnClosedOutput } from './closed-output.js';
import { commands } from './commands.js';
import { StateCorruptError } from '../state/event-log.js';
import { UsageError } from './errors.js';

export function buildProgram(): Command {
  const program = new Command('runctl')
    .description('Run ML training on AWS spot capacity from TrainingRun YAML kept in git.')
    .version(process.env.npm_package_version ?? '0.1.0', '-V, --version')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();
  for (const register of commands) register(program);
  return program;
}

/** Runs the CLI and resolves with the process exit code. */
export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  quietOnClosedOutput();
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help and --version end here with code 0; usage mistakes with 2 (commander already printed).
      return err.exitCode === 0 ? 0 : 2;
    }
    if (err instanceof UsageError) {
      if (err.message) process.stderr.write(`runctl: ${err.message}\n`);
      return err.exitCode;
    }
    // A damaged state file: the message names the file and what to do; a stack trace would not help.
    if (err instanceof StateCorruptError) {
      process.stderr.write(`runctl: ${err.message}\n`);
      return 1;
    }
    throw err;
  }
}
