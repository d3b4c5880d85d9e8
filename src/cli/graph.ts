import type { Command } from 'commander';
import { toMermaid } from '../machine/mermaid.js';

export function register(program: Command): void {
  program
    .command('graph')
    .description('Print the run state machine as a Mermaid diagram')
    .action(() => {
      process.stdout.write(toMermaid());
    });
}
