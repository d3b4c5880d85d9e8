// The fast path. Building yaml Documents with source ranges costs most of the time spent
// validating a large runs/ folder, and ranges are only needed to point at problems. So a file is
// first parsed with js-yaml (several times faster, no ranges), restricted to the plain YAML that
// specs are made of; if that document then passes every check without a single diagnostic, it is
// used as is. Anything unusual, and every file with any problem, goes through the yaml package,
// which stays the authority: a differential property test (test/spec/property.test.ts) checks
// that whatever this path accepts, yaml reads as the same data.
import jsYaml from 'js-yaml';

// Left to the full parser: directives (%YAML 1.1 changes what yes/no mean), tags, anchors (and so
// aliases, which js-yaml shares by reference and never caps), and keys that are lists, mappings
// or explicit (`? key`), which js-yaml quietly turns into text.
const DIRECTIVE = /^%|\n%/;
// Where a node can start: after the indent, after "- ", ": " or "? ", or after [ { , (flow).
const TAG = /(?:^[ \t]*|[-:?][ \t]+|[[{,][ \t]*)!/m;
const ANCHOR = /(?:^[ \t]*|[-:?][ \t]+|[[{,][ \t]*)&/m;
const COMPLEX_KEY = /(?:^|[\s[{,])\?(?:\s|$)|[\]}][ \t]*:(?:\s|$)/;

/**
 * A key whose text would read as null, a boolean or a number: its source may have been one, and
 * the two parsers turn such keys into different strings (`~:` is "null" to one, "" to the other).
 */
const NON_STRING_KEY = /^(?:|~|null|Null|NULL|true|True|TRUE|false|False|FALSE|<<|[-+]?[0-9_.]+(?:[eE][-+]?[0-9]+)?|0o[0-7_]+|0x[0-9a-fA-F_]+|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$/;

/**
 * YAML 1.2's core schema exactly as the specification (and the yaml package) has it. js-yaml's
 * own core schema also reads YAML 1.1 forms (0b101, 1_000, sexagesimal) as numbers.
 */
function scalar(tag: string, pattern: RegExp, construct: (text: string) => unknown): jsYaml.Type {
  return new jsYaml.Type(`tag:yaml.org,2002:${tag}`, { kind: 'scalar', resolve: (text: string) => pattern.test(text), construct });
}
const CORE_1_2 = jsYaml.FAILSAFE_SCHEMA.extend({
  implicit: [
    scalar('null', /^(?:~|null|Null|NULL)?$/, () => null),
    scalar('bool', /^(?:true|True|TRUE|false|False|FALSE)$/, (text) => text.toLowerCase() === 'true'),
    scalar('int', /^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$/, (text) =>
      text.startsWith('0o') ? parseInt(text.slice(2), 8) : text.startsWith('0x') ? parseInt(text.slice(2), 16) : Number(text),
    ),
    scalar('float', /^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$/, (text) =>
      /inf$/i.test(text) ? (text.startsWith('-') ? -Infinity : Infinity) : /nan$/i.test(text) ? NaN : Number(text),
    ),
  ],
});

/** The single mapping document of `text`, or undefined when the fast path cannot vouch for it. */
export function fastParse(text: string): unknown {
  if (DIRECTIVE.test(text) || TAG.test(text) || ANCHOR.test(text) || COMPLEX_KEY.test(text) || !plainLayout(text)) return undefined;
  let docs: unknown[];
  try {
    docs = jsYaml.loadAll(text, null, { schema: CORE_1_2 });
  } catch {
    return undefined;
  }
  const doc = docs.length === 1 ? docs[0] : undefined;
  // A spec is a mapping; anything else is an error, which the full parser places.
  return doc !== null && typeof doc === 'object' && !Array.isArray(doc) && plainKeys(doc) ? doc : undefined;
}

function plainKeys(node: unknown): boolean {
  if (node === null || typeof node !== 'object') return true;
  if (Array.isArray(node)) return node.every(plainKeys);
  for (const key in node) {
    if (NON_STRING_KEY.test(key) || !plainKeys((node as Record<string, unknown>)[key])) return false;
  }
  return true;
}

/**
 * True when every line is one the two parsers are known to read alike: a `key: value` line, a
 * `- item` line, a comment, a blank line, a document marker, or the content of a block scalar
 * (`|`, `>`). Quoted scalars and flow collections must close on the line they open on, and a
 * comment must follow a space. The parsers differ in how leniently they accept continuation lines
 * and comments glued to tokens; such files (rare in specs) take the full parser, which may well
 * accept them too.
 */
export function plainLayout(text: string): boolean {
  if (text.includes('\t') || text.includes('\r')) return false;
  const lines = text.split('\n');
  let blockIndent = -1; // inside a block scalar: the indent of the line that opened it
  for (const line of lines) {
    const indent = line.length - line.trimStart().length;
    if (blockIndent >= 0) {
      const blank = indent === line.length;
      // Lines of only spaces in a block scalar: the parsers disagree on whether they are content.
      if (blank && line !== '') return false;
      if (blank || indent > blockIndent) continue;
      blockIndent = -1;
    }
    const scan = scanLine(line);
    if (scan === undefined) return false;
    if (scan.blockScalar) blockIndent = indent;
  }
  return true;
}

/** undefined for a line outside the plain layout; otherwise whether it opens a block scalar. */
function scanLine(line: string): { blockScalar: boolean } | undefined {
  const n = line.length;
  let i = 0;
  while (i < n && line.charCodeAt(i) === 32) i++;
  const body = line.slice(i);
  if (body === '' || body[0] === '#' || body === '---' || body === '...' || body.startsWith('--- #')) return { blockScalar: false };
  // `---#…`, `--- key: …` and the like: document markers the parsers split differently.
  if (body.startsWith('---') || body.startsWith('...')) return undefined;
  const item = body[0] === '-' && (body.length === 1 || body[1] === ' ');
  // `- - x` (a sequence nested on one line) and `-` (an empty item): js-yaml accepts the items
  // that follow them at indents the yaml package (rightly) refuses, and nests them differently.
  if (item && (/^-[ ]+-(?:[ ]|$)/.test(body) || body.trimEnd() === '-')) return undefined;
  let depth = 0;
  let mapping = false;
  let lastToken = ''; // the last character that is not a space (a closing quote for a quoted scalar)
  let end = i; // just past that character
  while (i < n) {
    const c = line[i] as string;
    if (c === ' ') {
      i++;
      continue;
    }
    // A quote opens a quoted scalar where a scalar can start; inside a word (it's) it is text.
    if ((c === '"' || c === "'") && (lastToken === '' || SCALAR_STARTS_AFTER.includes(lastToken))) {
      const close = closingQuote(line, i);
      if (close === -1 || line[close + 1] === '#') return undefined;
      i = close + 1;
      lastToken = c;
      end = i;
      continue;
    }
    if (c === '#') {
      if (line[i - 1] === ' ') break; // a comment
      if (lastToken === ']' || lastToken === '}') return undefined; // glued to a collection
    }
    if (c === '[' || c === '{') depth++;
    else if (c === ']' || c === '}') {
      if (--depth < 0) return undefined;
    } else if (c === ':' && depth === 0 && (i + 1 === n || line[i + 1] === ' ')) mapping = true;
    lastToken = c;
    i++;
    end = i;
  }
  if (depth !== 0) return undefined;
  if (!mapping && !item) return undefined; // a continuation line, or a bare scalar
  const head = line.slice(0, end);
  if (INDENTED_BLOCK_SCALAR_HEADER.test(head) && BLOCK_SCALAR_HEADER.test(head)) return undefined;
  return { blockScalar: BLOCK_SCALAR_HEADER.test(head) };
}

const SCALAR_STARTS_AFTER = '-:?[{,';
const BLOCK_SCALAR_HEADER = /(?:^|[\s:-])[|>][-+0-9]*$/;
// An explicit indentation indicator (`|2`): rare, and read differently by the two parsers.
const INDENTED_BLOCK_SCALAR_HEADER = /(?:^|[\s:-])[|>][-+]?[0-9]/;

function closingQuote(line: string, open: number): number {
  const quote = line[open];
  for (let i = open + 1; i < line.length; i++) {
    if (quote === '"' && line[i] === '\\') i++;
    else if (line[i] === quote) {
      if (quote === "'" && line[i + 1] === "'") i++;
      else return i;
    }
  }
  return -1;
}
