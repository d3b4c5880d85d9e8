// Reads one YAML file into documents with positions, or says why it cannot: the byte-level
// checks (size, binary, encoding), the nesting bound, and files without any document.
import type { LineCounter } from 'yaml';
import type { Diagnostic } from './diagnostics.js';
import { excessiveNestingOffset, MAX_NESTING } from './nesting.js';
import { readSpecSource } from './source.js';
import { isEmptyDocument, parseYaml, type YamlDocument } from './yaml-document.js';

export interface YamlFile {
  /** Documents with content, with their index among all documents in the file. */
  documents: Array<{ doc: YamlDocument; index: number }>;
  lineCounter?: LineCounter;
  diagnostics: Diagnostic[];
}

function failure(file: string, line: number, column: number, message: string): YamlFile {
  return { documents: [], diagnostics: [{ file, line, column, path: '', message, severity: 'error' }] };
}

/** The file's text, or a diagnostic-only result (too big, binary, not UTF-8, empty, too deep). */
export function readYamlText(abs: string, file: string): { text: string } | YamlFile {
  const source = readSpecSource(abs);
  if (!source.ok) return failure(file, source.line, source.column, source.message);
  const deep = excessiveNestingOffset(source.text);
  if (deep !== -1) {
    const { line, column } = positionInText(source.text, deep);
    return failure(file, line, column, `YAML nested deeper than ${MAX_NESTING} levels; refused before parsing (a spec needs fewer than 10)`);
  }
  return { text: source.text };
}

export function parseYamlText(text: string, file: string): YamlFile {
  const { documents, lineCounter } = parseYaml(text);
  const withContent = documents
    .map((doc, index) => ({ doc, index }))
    .filter(({ doc }) => !isEmptyDocument(doc) || doc.errors.length > 0 || doc.warnings.length > 0);
  if (withContent.length === 0) {
    return failure(file, 1, 1, 'file has no YAML document (only comments or blank lines); expected a TrainingRun');
  }
  return { documents: withContent, lineCounter, diagnostics: [] };
}

export function readYamlFile(abs: string, file: string): YamlFile {
  const read = readYamlText(abs, file);
  return 'text' in read ? parseYamlText(read.text, file) : read;
}

function positionInText(text: string, offset: number): { line: number; column: number } {
  let line = 1;
  let lineStart = 0;
  for (let i = text.indexOf('\n'); i !== -1 && i < offset; i = text.indexOf('\n', i + 1)) {
    line++;
    lineStart = i + 1;
  }
  return { line, column: offset - lineStart + 1 };
}
