// Deeply nested YAML (`[[[[…` or `- - - - …`) makes the yaml composer recurse until the process
// runs out of stack or memory, and its parser slows down badly long before that. A spec is at most
// a handful of levels deep, so nesting is bounded before the parser runs.
import { yaml } from './yaml-module.js';

/** Deepest nesting accepted; a TrainingRun needs about 6. */
export const MAX_NESTING = 64;

/** Offset where the nesting bound is first exceeded, or -1 when `text` stays within it. */
export function excessiveNestingOffset(text: string): number {
  if (cheapNestingBound(text) <= MAX_NESTING) return -1;
  return lexedNestingOffset(text);
}

/**
 * An upper bound on nesting computed from characters alone, so ordinary specs skip the lexer:
 * every flow collection needs a bracket, every block level a deeper indent (two levels per
 * indent, for a sequence directly under a key) or an indicator on its line.
 */
function cheapNestingBound(text: string): number {
  let brackets = 0;
  let maxIndent = 0;
  let maxIndicators = 0;
  let indent = 0;
  let indicators = 0;
  let atLineStart = true;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 10) {
      atLineStart = true;
      indent = 0;
      indicators = 0;
      continue;
    }
    if (atLineStart) {
      if (c === 32 || c === 9) {
        indent++;
        if (indent > maxIndent) maxIndent = indent;
        continue;
      }
      atLineStart = false;
    }
    if (c === 91 || c === 123) brackets++; // [ {
    else if (c === 45 || c === 63 || c === 58) {
      // - ? :
      indicators++;
      if (indicators > maxIndicators) maxIndicators = indicators;
    }
  }
  return brackets + 2 * (maxIndent + 1) + maxIndicators;
}

/** Nesting measured on lexer tokens, which tell structure from quoted, plain and block scalars. */
function lexedNestingOffset(text: string): number {
  const { CST, Lexer } = yaml();
  let flow = 0;
  let indicators = 0;
  let offset = 0;
  let line = 0;
  let lineStart = 0;
  let lastStructuralLine = -1;
  // Indents of the block collections open on the current line's chain of parents.
  const indents: number[] = [];
  for (const token of new Lexer().lex(text)) {
    // The lexer's control tokens (document, scalar and flow-end markers) take no room in the source.
    if (token.length === 1 && token.charCodeAt(0) < 0x20 && token !== '\n' && token !== '\t') continue;
    const type = CST.tokenType(token);
    if (STRUCTURAL.has(type as string)) {
      if (line !== lastStructuralLine) {
        lastStructuralLine = line;
        indicators = 0;
        let indent = 0;
        while (text.charCodeAt(lineStart + indent) === 32) indent++;
        while (indents.length > 0 && (indents[indents.length - 1] as number) >= indent) indents.pop();
        indents.push(indent);
      }
      if (type === 'flow-map-start' || type === 'flow-seq-start') flow++;
      else if (type === 'flow-map-end' || type === 'flow-seq-end') flow = Math.max(0, flow - 1);
      else indicators++;
      // Two levels per indent: a sequence may sit directly under a key at the same indent.
      if (flow + 2 * indents.length + indicators > MAX_NESTING) return offset;
    }
    for (let i = token.indexOf('\n'); i !== -1; i = token.indexOf('\n', i + 1)) {
      line++;
      lineStart = offset + i + 1;
    }
    offset += token.length;
  }
  return -1;
}

const STRUCTURAL = new Set([
  'seq-item-ind',
  'explicit-key-ind',
  'map-value-ind',
  'flow-map-start',
  'flow-seq-start',
  'flow-map-end',
  'flow-seq-end',
]);
