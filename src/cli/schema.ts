// `runctl schema`: print the JSON Schema, for editors, CI tools and people.
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';

export function register(program: Command): void {
  program
    .command('schema')
    .description('Print the TrainingRun JSON Schema (or, with --project, the runctl.yaml schema)')
    .option('--project', 'print the schema of runctl.yaml instead')
    .action(async (opts: { project?: boolean }) => {
      const { PROJECT_SCHEMA_FILE, TRAINING_RUN_SCHEMA_FILE } = await import('../spec/schemas.js');
      process.stdout.write(readFileSync(opts.project ? PROJECT_SCHEMA_FILE : TRAINING_RUN_SCHEMA_FILE, 'utf8'));
    });
}
