// One YAML document with source positions through every check: YAML errors, structure, aliases,
// then the data checks, each problem placed on its node. Bad input becomes diagnostics, never an
// exception.
import type { LineCounter } from 'yaml';
import type { Diagnostic } from './diagnostics.js';
import { formatPath, type Segment } from './field-path.js';
import { checkRunData, type RunDataContext } from './run-data.js';
import type { TrainingRun } from './types.js';
import { findStructureProblems, MAX_ALIAS_COUNT, offsetOf, positionAt, scalarSourceAt, type YamlDocument } from './yaml-document.js';

export interface DocumentContext extends RunDataContext {
  file: string;
  lineCounter: LineCounter;
}

export interface DocumentResult {
  run?: TrainingRun;
  diagnostics: Diagnostic[];
  /** metadata.name, when it is a usable name (even if the run is invalid), and where it is written. */
  name?: { value: string; position: () => { line: number; column: number } };
}

export function validateDocument(doc: YamlDocument, ctx: DocumentContext): DocumentResult {
  const diagnostics: Diagnostic[] = [];
  const at = (offset: number, path: readonly Segment[], message: string, severity: Diagnostic['severity'] = 'error'): void => {
    diagnostics.push({ file: ctx.file, ...positionAt(ctx.lineCounter, offset), path: formatPath(path), message, severity });
  };

  for (const warn of doc.warnings) at(warn.pos[0], [], `YAML: ${firstLine(warn.message)}`, 'warning');
  if (doc.errors.length > 0) {
    for (const err of doc.errors) at(err.pos[0], [], `YAML syntax error: ${firstLine(err.message)}`);
    return { diagnostics };
  }

  const structure = findStructureProblems(doc, ctx.lineCounter);
  for (const p of structure.problems) at(p.offset, p.path, p.message);
  if (structure.problems.some((p) => p.fatal)) return { diagnostics };

  let data: unknown;
  try {
    data = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
  } catch (err) {
    const offset = structure.firstAliasOffset ?? doc.contents?.range[0] ?? 0;
    const message =
      err instanceof ReferenceError && /alias/i.test(err.message)
        ? `YAML aliases expand to too much data (more than ${MAX_ALIAS_COUNT} alias uses); refused as a possible alias bomb`
        : `YAML could not be read: ${firstLine(err instanceof Error ? err.message : String(err))}`;
    at(offset, [], message);
    return { diagnostics };
  }

  const result = checkRunData(data, { ...ctx, sourceOf: (path) => scalarSourceAt(doc, path) });
  for (const p of result.problems) at(p.offset ?? offsetOf(doc, p.path, p.anchor), p.path, p.message, p.severity);
  // Only needed when the name turns out to be a duplicate.
  const name = result.name === undefined ? undefined : { value: result.name, position: () => positionAt(ctx.lineCounter, offsetOf(doc, ['metadata', 'name'])) };
  return { run: structure.problems.length === 0 ? result.run : undefined, diagnostics, name };
}

function firstLine(message: string): string {
  return (message.split('\n')[0] ?? message).trim();
}
