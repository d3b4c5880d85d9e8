// `runctl plan --show-bundle`: what each run's code bundle holds (files, bytes before compression)
// and, above all, the files it ships only because `code.include` asks for them (issue 12): a
// project's .gitignore often leaves out the prepared data its training needs.
import { listBundle, type BundleListing } from '../agent/bundle.js';
import type { LoadedRun } from '../spec/types.js';
import { formatBytes } from '../ui/format.js';

/** One run's bundle listing, or why it could not be made. */
export interface RunBundle {
  run: string;
  codePath: string;
  listing?: BundleListing;
  error?: string;
}

/** Largest number of included-only files printed one by one in text output. */
const SHOWN = 20;

/** Lists the bundle of each run, in the order given. Never throws for a run's code folder. */
export async function listRunBundles(runs: readonly LoadedRun[], repoRoot: string): Promise<RunBundle[]> {
  const out: RunBundle[] = [];
  for (const r of runs) {
    const codePath = r.run.spec.code.path;
    try {
      out.push({ run: r.run.metadata.name, codePath, listing: await listBundle(repoRoot, r.run.spec.code) });
    } catch (err) {
      out.push({ run: r.run.metadata.name, codePath, error: (err as Error).message });
    }
  }
  return out;
}

export function renderBundlesText(bundles: readonly RunBundle[]): string {
  const lines: string[] = ['', 'Code bundles:'];
  for (const b of bundles) {
    if (!b.listing) {
      lines.push(`  ${b.run}: ${b.codePath}: cannot be listed: ${b.error}`);
      continue;
    }
    const l = b.listing;
    lines.push(`  ${b.run}: ${b.codePath}: ${l.fileCount} file${l.fileCount === 1 ? '' : 's'}, ${formatBytes(l.contentBytes)} before compression`);
    if (l.includedOnly.length > 0) {
      const bytes = l.includedOnly.reduce((s, f) => s + f.bytes, 0);
      lines.push(`    shipped only because of code.include: ${l.includedOnly.length} file${l.includedOnly.length === 1 ? '' : 's'}, ${formatBytes(bytes)}`);
      for (const f of l.includedOnly.slice(0, SHOWN)) lines.push(`      ${f.path} (${formatBytes(f.bytes)})`);
      if (l.includedOnly.length > SHOWN) lines.push(`      … and ${l.includedOnly.length - SHOWN} more (-o json lists them all)`);
    }
    for (const p of l.includeUnmatched) lines.push(`    warning: code.include pattern ${JSON.stringify(p)} matches no file a .gitignore leaves out`);
    if (l.skippedSymlinks.length > 0) lines.push(`    left out: ${l.skippedSymlinks.length} symlink${l.skippedSymlinks.length === 1 ? '' : 's'} leading outside the code folder (${l.skippedSymlinks.slice(0, 5).join(', ')})`);
  }
  return `${lines.join('\n')}\n`;
}
