// Where a field of an already loaded run is written, for problems found after loading (the
// plan-time checks against a cloud): the file is read again and the path looked up in its
// document. A field not written there (a default) is placed at the nearest enclosing node.
import path from 'node:path';
import type { Diagnostic } from './diagnostics.js';
import { formatPath, type Segment } from './field-path.js';
import type { LoadedRun } from './types.js';
import { offsetOf, positionAt } from './yaml-document.js';
import { readYamlFile } from './yaml-file.js';

/** True when the field at `fieldPath` is written in the run's file (not a default). */
export function isWritten(loaded: Pick<LoadedRun, 'file' | 'documentIndex'>, fieldPath: readonly Segment[], cwd = process.cwd()): boolean {
  const parsed = readYamlFile(path.resolve(cwd, loaded.file), loaded.file);
  const entry = parsed.documents.find((d) => d.index === loaded.documentIndex) ?? parsed.documents[0];
  return entry?.doc.hasIn(fieldPath as Segment[]) ?? false;
}

export function diagnosticAt(
  loaded: Pick<LoadedRun, 'file' | 'documentIndex'>,
  fieldPath: readonly Segment[],
  message: string,
  severity: Diagnostic['severity'],
  cwd = process.cwd(),
): Diagnostic {
  const at = { line: 1, column: 1 };
  const parsed = readYamlFile(path.resolve(cwd, loaded.file), loaded.file);
  const entry = parsed.documents.find((d) => d.index === loaded.documentIndex) ?? parsed.documents[0];
  if (entry && parsed.lineCounter) Object.assign(at, positionAt(parsed.lineCounter, offsetOf(entry.doc, fieldPath)));
  return { file: loaded.file, ...at, path: formatPath(fieldPath), message, severity };
}
