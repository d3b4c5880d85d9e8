// YAML documents with their source positions: parsing, finding the node behind a field path,
// and the structural checks the yaml package leaves to us (duplicate keys, odd keys, aliases).
import type { Document, LineCounter, Node, Pair } from 'yaml';
import type { Segment } from './field-path.js';
import { yaml } from './yaml-module.js';

export type YamlDocument = Document.Parsed;

/** Passed to yaml's toJS, which refuses exponential alias expansion ("billion laughs") past it. */
export const MAX_ALIAS_COUNT = 100;

export interface ParsedYaml {
  documents: YamlDocument[];
  lineCounter: LineCounter;
}

export function parseYaml(text: string): ParsedYaml {
  const { LineCounter, parseAllDocuments } = yaml();
  const lineCounter = new LineCounter();
  // Duplicate keys are found by findStructureProblems, which can name both places.
  const parsed = parseAllDocuments(text, { lineCounter, uniqueKeys: false, prettyErrors: false });
  return { documents: Array.isArray(parsed) ? parsed : [], lineCounter };
}

export interface Position {
  line: number;
  column: number;
}

export function positionAt(lineCounter: LineCounter, offset: number): Position {
  const { line, col } = lineCounter.linePos(offset);
  return { line: Math.max(1, line), column: Math.max(1, col) };
}

/** True when the document holds nothing (only comments, or an empty `---`). */
export function isEmptyDocument(doc: YamlDocument): boolean {
  const { isScalar } = yaml();
  const contents = doc.contents;
  return contents === null || (isScalar(contents) && contents.value === null && !contents.source);
}

function keyText(key: unknown): string | undefined {
  if (yaml().isScalar(key)) return key.value === null ? '' : String(key.value);
  return undefined;
}

function start(node: { range?: [number, number, number] | null } | null | undefined): number | undefined {
  return node?.range ? node.range[0] : undefined;
}

function isBlank(node: unknown): boolean {
  return node === null || node === undefined || (yaml().isScalar(node) && node.value === null && !node.source);
}

/**
 * Source offset for a field path. `value` points at the value (or at its key when the value is
 * empty); `key` at the key. When the path does not exist in the source (a missing field, or one
 * filled in by a default), the nearest enclosing node that does exist is used.
 */
export function offsetOf(doc: YamlDocument, path: readonly Segment[], anchor: 'value' | 'key' = 'value'): number {
  const { isAlias, isMap, isSeq } = yaml();
  let node: unknown = doc.contents;
  let nearest = start(node as Node) ?? 0;
  for (let i = 0; i < path.length; i++) {
    if (isAlias(node)) node = node.resolve(doc);
    const segment = path[i] as Segment;
    const last = i === path.length - 1;
    if (isMap(node)) {
      const pair = (node.items as Pair[]).find((p) => keyText(p.key) === String(segment));
      if (!pair) return nearest;
      const keyOffset = start(pair.key as Node) ?? nearest;
      if (last && anchor === 'key') return keyOffset;
      if (isBlank(pair.value)) return keyOffset;
      node = pair.value;
    } else if (isSeq(node) && typeof segment === 'number') {
      const item = node.items[segment];
      if (item === undefined || isBlank(item)) return nearest;
      node = item;
    } else {
      return nearest;
    }
    nearest = start(node as Node) ?? nearest;
  }
  return nearest;
}

/**
 * The text a scalar was written as, for a field path: `3.10` where the data holds 3.1, `0x1F`
 * where it holds 31, `~` where it holds null. Advice quotes this, not the parsed value (issue 10).
 * Undefined when the path is not a scalar written in this document (missing, default, alias).
 */
export function scalarSourceAt(doc: YamlDocument, path: readonly Segment[]): string | undefined {
  const { isMap, isScalar, isSeq } = yaml();
  let node: unknown = doc.contents;
  for (const segment of path) {
    if (isMap(node)) {
      const pair = (node.items as Pair[]).find((p) => keyText(p.key) === String(segment));
      node = pair?.value;
    } else if (isSeq(node) && typeof segment === 'number') {
      node = node.items[segment];
    } else {
      return undefined;
    }
  }
  return isScalar(node) && typeof node.source === 'string' ? node.source : undefined;
}

export interface StructureProblem {
  path: Segment[];
  offset: number;
  message: string;
  /** The document cannot be turned into plain data (a key that is a list or a mapping). */
  fatal: boolean;
}

export interface StructureReport {
  problems: StructureProblem[];
  /** Offset of the first alias (`*name`), if any: where an alias bomb is reported. */
  firstAliasOffset: number | undefined;
}

/** Duplicate keys (naming both places) and keys that are not plain scalars, in one pass. */
export function findStructureProblems(doc: YamlDocument, lineCounter: LineCounter): StructureReport {
  const { isAlias, isMap, isSeq } = yaml();
  const problems: StructureProblem[] = [];
  let firstAliasOffset: number | undefined;
  const stack: Array<{ node: unknown; path: Segment[] }> = [{ node: doc.contents, path: [] }];
  while (stack.length > 0) {
    const { node, path } = stack.pop() as { node: unknown; path: Segment[] };
    if (isAlias(node)) {
      const at = start(node) ?? 0;
      if (firstAliasOffset === undefined || at < firstAliasOffset) firstAliasOffset = at;
    } else if (isMap(node)) {
      const seen = new Map<string, number>();
      for (const pair of node.items as Pair[]) {
        const key = keyText(pair.key);
        const keyOffset = start(pair.key as Node) ?? start(node) ?? 0;
        if (key === undefined) {
          problems.push({ path, offset: keyOffset, message: 'mapping keys must be plain text, not a list or a mapping', fatal: true });
          continue;
        }
        const first = seen.get(key);
        if (first !== undefined) {
          const { line, column } = positionAt(lineCounter, first);
          problems.push({ path: [...path, key], offset: keyOffset, message: `duplicate key "${key}" (first defined at ${line}:${column})`, fatal: false });
        } else {
          seen.set(key, keyOffset);
        }
        stack.push({ node: pair.value, path: [...path, key] });
      }
    } else if (isSeq(node)) {
      node.items.forEach((item, index) => stack.push({ node: item, path: [...path, index] }));
    }
  }
  return { problems, firstAliasOffset };
}
