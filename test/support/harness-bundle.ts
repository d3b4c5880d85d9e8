// The test harnesses (test/support/*-harness.ts) run as child processes: the crash test starts one
// 160 times (killed at each effect boundary, then restarted), the aws kill chain once per effect.
// Through tsx, every start compiles and loads some 150 TypeScript modules through loader hooks:
// about 0.4 s of CPU each, a minute of CI's two cores for the crash test alone. The global setup
// bundles each harness once per test run with esbuild into one ES module, which starts in about
// 0.15 s of CPU. Hand-written code would not do this better: esbuild is what tsx compiles with.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildSync } from 'esbuild';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/**
 * Where the bundles go: two levels below the project root, like `src/spec/`, so the
 * `new URL('../../schema/…', import.meta.url)` of the sources bundled into them still names the
 * project's `schema/` folder; and inside the project, so their packages resolve from its
 * `node_modules`. `test-artifacts/` is ignored by git.
 */
const BUNDLE_DIR = path.join(root, 'test-artifacts', 'harness');

/** A module that runs itself when it is the entry point, as `src/providers/local/instance-host.ts` does. */
const MAIN_GUARD = /process\.argv\[1\][^\n]*\n?[^\n]*import\.meta\.url|import\.meta\.url[^\n]*process\.argv\[1\]/;

/** The harnesses tests start as processes; each is bundled by {@link bundleHarnesses}. */
export type HarnessName = 'crash-harness' | 'aws-crash-harness' | 'gitops-harness';
const HARNESSES: readonly HarnessName[] = ['crash-harness', 'aws-crash-harness', 'gitops-harness'];

/**
 * Bundles every harness (sources included, packages left to `node_modules`) into
 * `test-artifacts/harness/<name>.mjs`. Each file is written under a temporary name and renamed,
 * so a test run starting beside another one never loads half a bundle.
 * Throws esbuild's error (file, line, column) when a harness does not compile.
 */
export function bundleHarnesses(): void {
  fs.mkdirSync(BUNDLE_DIR, { recursive: true });
  for (const name of HARNESSES) {
    const target = path.join(BUNDLE_DIR, `${name}.mjs`);
    const temporary = `${target}.${process.pid}.tmp`;
    const built = buildSync({
      entryPoints: [path.join(root, 'test', 'support', `${name}.ts`)],
      outfile: temporary,
      bundle: true,
      platform: 'node',
      format: 'esm',
      target: 'node20',
      packages: 'external',
      logLevel: 'error',
      metafile: true,
      absWorkingDir: root,
    });
    const scripts = Object.keys(built.metafile.inputs).filter((input) => MAIN_GUARD.test(fs.readFileSync(path.join(root, input), 'utf8')));
    if (scripts.length > 0) {
      fs.rmSync(temporary, { force: true });
      throw new Error(`${name}: bundling ${scripts.join(', ')} would run it as a script (its "am I the entry point" test compares process.argv[1] with import.meta.url, and both name the bundle); import less, or run this harness with tsx`);
    }
    fs.renameSync(temporary, target);
  }
}

/**
 * The arguments that start harness `name` with `process.execPath`: its bundle, which the global
 * setup wrote. Throws, saying to run the test through vitest, when the bundle is missing.
 */
export function harnessCommand(name: HarnessName): string[] {
  const bundle = path.join(BUNDLE_DIR, `${name}.mjs`);
  if (!fs.existsSync(bundle)) throw new Error(`${path.relative(root, bundle)} is missing: run tests with vitest, whose global setup bundles the harnesses`);
  return [bundle];
}
