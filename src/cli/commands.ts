// The list of commands, in the order `runctl --help` shows them. Each module exports
// `register(program)`, which adds one command with its options and a one-line description.
import type { Command } from 'commander';
import { register as iamPolicy } from './iam-policy.js';

export const commands: Array<(program: Command) => void> = [iamPolicy];
