// Builds dist/ once so tests that spawn the real CLI (`bin/runctl.js`) run the current sources,
// and the agent zipapp (dist/agent/runctl-agent.pyz) so tests run the current agent package.
// Type errors do not stop the build here (tsc still emits); test/typecheck.test.ts fails on them.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { bundleHarnesses } from './harness-bundle.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export default function setup(): void {
  const result = spawnSync(process.execPath, [path.join(root, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json'], {
    cwd: root,
    encoding: 'utf8',
  });
  if (result.error) throw result.error;
  const agent = spawnSync('python3', [path.join(root, 'src/agent/build-pyz.py')], { cwd: root, encoding: 'utf8' });
  if (agent.error) throw agent.error;
  if (agent.status !== 0) throw new Error(`building the agent zipapp failed:\n${agent.stderr}`);
  // The dashboard's page is served from dist/web/static by the built CLI (as `npm run build` copies it).
  fs.cpSync(path.join(root, 'src/web/static'), path.join(root, 'dist/web/static'), { recursive: true });
  bundleHarnesses();
}
