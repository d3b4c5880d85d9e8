// One spec file: its runs, its problems, and the names it defines. A clean single-document file
// takes the fast path (fast-parse.ts); anything else, and any file with a problem, is parsed with
// source positions so each problem points at its node.
import type { Diagnostic } from './diagnostics.js';
import { validateDocument } from './document.js';
import { fastParse } from './fast-parse.js';
import { specHash } from './hash.js';
import { checkRunData, type RunDataContext } from './run-data.js';
import type { LoadedRun, TrainingRun } from './types.js';
import { offsetOf, positionAt } from './yaml-document.js';
import { parseYamlText, readYamlText } from './yaml-file.js';

export interface NamedRun {
  name: string;
  file: string;
  /** Where metadata.name is written; computed only when needed (a duplicate). */
  position: () => { line: number; column: number };
  run?: LoadedRun;
}

export interface FileResult {
  runs: LoadedRun[];
  diagnostics: Diagnostic[];
  names: NamedRun[];
}

export function loadFile(abs: string, file: string, ctx: RunDataContext): FileResult {
  const read = readYamlText(abs, file);
  if (!('text' in read)) return { runs: [], diagnostics: read.diagnostics, names: [] };
  const { text } = read;

  const data = fastParse(text);
  if (data !== undefined) {
    const result = checkRunData(data, ctx);
    if (result.run && result.problems.length === 0 && result.name !== undefined) {
      const run = loadedRun(result.run, file, 0);
      return { runs: [run], diagnostics: [], names: [{ name: result.name, file, position: () => namePosition(text), run }] };
    }
  }

  const parsed = parseYamlText(text, file);
  const out: FileResult = { runs: [], diagnostics: parsed.diagnostics, names: [] };
  if (!parsed.lineCounter) return out;
  for (const { doc, index } of parsed.documents) {
    const result = validateDocument(doc, { ...ctx, file, lineCounter: parsed.lineCounter });
    out.diagnostics.push(...result.diagnostics);
    const run = result.run ? loadedRun(result.run, file, index) : undefined;
    if (run) out.runs.push(run);
    if (result.name) out.names.push({ name: result.name.value, file, position: result.name.position, run });
  }
  return out;
}

/** metadata.name's position in a single-document file that took the fast path. */
function namePosition(text: string): { line: number; column: number } {
  const parsed = parseYamlText(text, '');
  const first = parsed.documents[0];
  if (!first || !parsed.lineCounter) return { line: 1, column: 1 };
  return positionAt(parsed.lineCounter, offsetOf(first.doc, ['metadata', 'name']));
}

function loadedRun(run: TrainingRun, file: string, documentIndex: number): LoadedRun {
  return new LazilyHashedRun(run, file, documentIndex);
}

/**
 * specHash is computed on first read: validating needs none (and it is a good part of the cost of
 * a clean run), the reconciler reads it once per run. toJSON keeps it in serialized copies.
 */
class LazilyHashedRun implements LoadedRun {
  #hash: string | undefined;

  constructor(
    readonly run: TrainingRun,
    readonly file: string,
    readonly documentIndex: number,
  ) {}

  get specHash(): string {
    this.#hash ??= specHash(this.run);
    return this.#hash;
  }

  toJSON(): LoadedRun {
    return { run: this.run, file: this.file, documentIndex: this.documentIndex, specHash: this.specHash };
  }
}
