#!/usr/bin/env node
// `npm run bench`: runs every bench/*.bench.js and bench/*.bench.ts module, each in its own
// process, in name order. `npm run bench -- validate` runs only the modules whose name contains
// "validate"; a filter that is a module's whole name selects that module alone (`recovery` runs
// recovery.bench.ts, not quickstart-recovery.bench.ts too). A module prints its own table and
// writes its section of docs/BENCHMARKS.md.
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const filters = process.argv.slice(2);
const all = readdirSync(here).filter((name) => /\.bench\.(js|mjs|ts|mts)$/.test(name));
const stem = (name) => name.replace(/\.bench\.(js|mjs|ts|mts)$/, '');
const isStem = (filter) => all.some((name) => stem(name) === filter);
const modules = all
  .filter((name) => filters.length === 0 || filters.some((f) => (isStem(f) ? stem(name) === f : name.includes(f))))
  .sort();

if (modules.length === 0) {
  process.stderr.write(`no bench/*.bench.{js,ts} module${filters.length ? ` matching ${filters.join(', ')}` : ''}\n`);
  process.exit(2);
}

let failed = 0;
for (const name of modules) {
  process.stdout.write(`\n== ${name}\n`);
  // TypeScript modules run through tsx (a dev dependency), JavaScript ones directly.
  const loader = /\.m?ts$/.test(name) ? ['--import', 'tsx'] : [];
  // Benches make AWS SDK clients of their own (beside the provider's, which silence it): keep the
  // SDK's Node-version warning out of their output too.
  const env = { AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true', ...process.env };
  const result = spawnSync(process.execPath, [...loader, path.join(here, name)], { stdio: 'inherit', cwd: path.dirname(here), env });
  if (result.status !== 0) {
    failed++;
    process.stderr.write(`${name} failed (exit ${result.status ?? result.signal})\n`);
  }
}
process.exit(failed > 0 ? 1 : 0);
