// spec.progress.pattern: a regular expression in ECMAScript syntax (as JSON Schema patterns are,
// with the `u` flag ajv uses), run by the agent, which is Python (stdlib `re`). This module reads
// the pattern and writes the Python pattern with the same meaning, or refuses it at the character
// where it stops being sure of that (docs/progress.md lists the subset). Refusing is the point:
// a pattern that means something else in Python would silently show wrong progress.
//
// The Python side compiles with re.ASCII, so \d, \w, \b (and \D, \W, \B) mean what they mean in
// ECMAScript. Everything else that differs is spelled out: `.` excludes ECMAScript's four line
// terminators, `$` is `\Z` (Python's `$` also matches before a final newline), `\s` is
// ECMAScript's list of white space. Left out, with a reason: lookbehind (Python needs a fixed
// width), backreferences (a group that did not take part matches the empty string in ECMAScript
// and fails in Python), Unicode property escapes, and named groups inside a repeated group
// (ECMAScript forgets their value when a later repetition skips them, Python keeps it).

/** The groups the agent reads; any other named group is a metric. */
export const PROGRESS_GROUPS = ['step', 'total', 'loss'] as const;

/** Longest pattern accepted (characters). */
export const MAX_PATTERN_LENGTH = 1000;

export interface TranslatedPattern {
  /** The same pattern in Python `re` syntax, to compile with re.ASCII. */
  python: string;
  /** Named groups, in order of appearance. */
  groups: string[];
}

/** The pattern cannot be used; `index` is the 0-based character of the pattern where it fails. */
export class ProgressPatternError extends Error {
  constructor(
    readonly reason: string,
    readonly index: number,
    readonly pattern: string,
  ) {
    super(`at character ${index + 1} of the pattern${context(pattern, index)}: ${reason}`);
    this.name = 'ProgressPatternError';
  }
}

function context(pattern: string, index: number): string {
  const before = pattern.slice(Math.max(0, index - 24), index);
  const at = pattern.slice(index, index + 8);
  const shownBefore = JSON.stringify((index > 24 ? '…' : '') + before);
  const shownAt = JSON.stringify(at + (index + 8 < pattern.length ? '…' : ''));
  if (!before) return at ? ` (at ${shownAt})` : '';
  return at ? ` (after ${shownBefore}, at ${shownAt})` : ` (after ${shownBefore}, at its end)`;
}

// ECMAScript's WhiteSpace and LineTerminator code points (ECMA-262 §12.2, §12.3), the meaning of \s.
const JS_SPACE = '\\t\\n\\x0b\\x0c\\r \\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff';
const SYNTAX = '^$\\.*+?()[]{}|/';
const CONTROL: Record<string, string> = { f: '\\x0c', n: '\\n', r: '\\r', t: '\\t', v: '\\x0b' };

interface GroupFrame {
  /** Named groups opened inside this group (for the repeated-group rule). */
  named: { name: string; at: number }[];
}

/**
 * Translates an ECMAScript pattern (the `u` flag's syntax) to Python `re`. Throws
 * ProgressPatternError naming the character where the pattern fails or leaves the subset, and
 * when it has no `step` group (a point of progress needs its step).
 */
export function translateProgressPattern(source: string): TranslatedPattern {
  if (source.length === 0) throw new ProgressPatternError('an empty pattern matches every line', 0, source);
  if (source.length > MAX_PATTERN_LENGTH) {
    throw new ProgressPatternError(`is longer than ${MAX_PATTERN_LENGTH} characters`, MAX_PATTERN_LENGTH, source);
  }
  const p = new Parser(source);
  const python = p.disjunction();
  if (p.i < source.length) {
    throw new ProgressPatternError(source[p.i] === ')' ? 'unmatched ")"' : `unexpected ${JSON.stringify(source[p.i])}`, p.i, source);
  }
  try {
    new RegExp(source, 'u');
  } catch (err) {
    // The parser above accepts only what ECMAScript accepts; this is a second opinion.
    throw new ProgressPatternError(`is not a valid ECMAScript pattern (${(err as Error).message})`, 0, source);
  }
  if (!p.groups.includes('step')) {
    throw new ProgressPatternError('has no named group "step": write one around the step number, e.g. (?<step>\\d+)', source.length, source);
  }
  return { python, groups: p.groups };
}

class Parser {
  i = 0;
  readonly groups: string[] = [];
  private readonly frames: GroupFrame[] = [{ named: [] }];

  constructor(private readonly s: string) {}

  private fail(reason: string, at = this.i): never {
    throw new ProgressPatternError(reason, at, this.s);
  }

  private peek(offset = 0): string | undefined {
    return this.s[this.i + offset];
  }

  disjunction(): string {
    const parts = [this.alternative()];
    while (this.peek() === '|') {
      this.i++;
      parts.push(this.alternative());
    }
    return parts.join('|');
  }

  private alternative(): string {
    let out = '';
    while (this.i < this.s.length && this.peek() !== '|' && this.peek() !== ')') out += this.term();
    return out;
  }

  private term(): string {
    const start = this.i;
    const c = this.peek();
    if (c === '^') {
      this.i++;
      this.noQuantifier('"^"');
      return '^';
    }
    if (c === '$') {
      this.i++;
      this.noQuantifier('"$"');
      return '\\Z';
    }
    if (c === '\\' && (this.peek(1) === 'b' || this.peek(1) === 'B')) {
      this.i += 2;
      this.noQuantifier(`"\\${this.s[start + 1]}"`);
      return `\\${this.s[start + 1]}`;
    }
    if (c === '(' && this.peek(1) === '?' && (this.peek(2) === '=' || this.peek(2) === '!')) {
      this.i += 3;
      const inner = this.groupBody(start);
      this.noQuantifier('a lookahead');
      return `(?${this.s[start + 2]}${inner})`;
    }
    if (c === '(' && this.peek(1) === '?' && this.peek(2) === '<' && (this.peek(3) === '=' || this.peek(3) === '!')) {
      this.fail('lookbehind is not supported (Python only runs fixed-width lookbehind); match the text before instead');
    }
    const frameCount = this.frames.length;
    let named: GroupFrame['named'] = [];
    let atom: string;
    if (c === '(') {
      const frame: GroupFrame = { named: [] };
      this.frames.push(frame);
      atom = this.group(start);
      this.frames.pop();
      named = frame.named;
      this.frames[frameCount - 1]!.named.push(...named);
    } else {
      atom = this.atom();
    }
    const q = this.quantifier();
    if (q === undefined) return atom;
    const first = named[0];
    if (q.max > 1 && first !== undefined) {
      this.fail(
        `the named group "${first.name}" is inside a repeated group: ECMAScript forgets its value when a later repetition skips it and Python keeps it; take the group out of the repetition`,
        first.at,
      );
    }
    return atom + q.text;
  }

  private noQuantifier(what: string): void {
    const c = this.peek();
    if (c === '*' || c === '+' || c === '?' || (c === '{' && /^\{\d+(,\d*)?\}/.test(this.s.slice(this.i)))) {
      this.fail(`${what} cannot be repeated`);
    }
  }

  private quantifier(): { text: string; max: number } | undefined {
    const c = this.peek();
    let text: string;
    let max: number;
    if (c === '*' || c === '+' || c === '?') {
      this.i++;
      text = c;
      max = c === '?' ? 1 : Infinity;
    } else if (c === '{') {
      const m = /^\{(\d+)(,(\d*))?\}/.exec(this.s.slice(this.i));
      if (!m) this.fail('a "{" that does not start a repetition such as {2,5} (write "\\{" for the character)');
      const min = Number(m[1]);
      max = m[2] === undefined ? min : m[3] === '' ? Infinity : Number(m[3]);
      if (min > 65535 || (max !== Infinity && max > 65535)) this.fail('a repetition count above 65535');
      if (max < min) this.fail(`the repetition {${m[1]}${m[2]}} has its numbers out of order`);
      this.i += m[0].length;
      text = m[0];
    } else {
      return undefined;
    }
    if (this.peek() === '?') {
      this.i++;
      text += '?';
    }
    const next = this.peek();
    if (next === '*' || next === '+' || next === '?' || next === '{') this.fail('nothing to repeat');
    return { text, max };
  }

  private group(start: number): string {
    if (this.peek(1) !== '?') {
      this.i++;
      return `(${this.groupBody(start)})`;
    }
    if (this.peek(2) === ':') {
      this.i += 3;
      return `(?:${this.groupBody(start)})`;
    }
    if (this.peek(2) === '<') {
      const m = /^\(\?<([^>]*)>/.exec(this.s.slice(this.i));
      if (!m) this.fail('a group name without its closing ">"');
      const name = m[1] ?? '';
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) {
        this.fail(`the group name ${JSON.stringify(name)} is not letters, digits and "_" (not starting with a digit)`, this.i + 3);
      }
      if (this.groups.includes(name)) this.fail(`the group name "${name}" is used twice`, this.i + 3);
      this.groups.push(name);
      this.frames[this.frames.length - 1]!.named.push({ name, at: this.i + 3 });
      this.i += m[0].length;
      return `(?P<${name}>${this.groupBody(start)})`;
    }
    this.fail('an unknown group kind: use (…), (?:…), (?<name>…), (?=…) or (?!…)');
  }

  private groupBody(start: number): string {
    const inner = this.disjunction();
    if (this.peek() !== ')') this.fail('a group opened here is not closed', start);
    this.i++;
    return inner;
  }

  private atom(): string {
    const c = this.s[this.i];
    if (c === '.') {
      this.i++;
      return '[^\\n\\r\\u2028\\u2029]';
    }
    if (c === '[') return this.characterClass();
    if (c === '\\') return this.escape(false);
    if (c === '*' || c === '+' || c === '?') this.fail('nothing to repeat');
    if (c === '{') this.fail('a "{" that does not follow something to repeat (write "\\{" for the character)');
    if (c === '}' || c === ']') this.fail(`a lone "${c}" (write "\\${c}" for the character)`);
    const cp = this.s.codePointAt(this.i)!;
    const ch = String.fromCodePoint(cp);
    this.i += ch.length;
    return literal(cp);
  }

  /** An escape at this.i (a backslash); inClass: inside […]. Returns Python text for it. */
  private escape(inClass: boolean): string {
    const start = this.i;
    const c = this.s[this.i + 1];
    if (c === undefined) this.fail('a "\\" at the end of the pattern');
    this.i += 2;
    switch (c) {
      case 'd':
      case 'D':
      case 'w':
      case 'W':
        return `\\${c}`; // re.ASCII: the same classes as ECMAScript
      case 's':
        return inClass ? JS_SPACE : `[${JS_SPACE}]`;
      case 'S':
        if (inClass) this.fail('"\\S" inside a character class is not supported (Python\'s differs); list the characters instead', start);
        return `[^${JS_SPACE}]`;
      case 'b':
        if (inClass) return '\\x08';
        break;
      case 'f':
      case 'n':
      case 'r':
      case 't':
      case 'v':
        return CONTROL[c]!;
      case 'c': {
        const letter = this.s[this.i];
        if (letter === undefined || !/[A-Za-z]/.test(letter)) this.fail('"\\c" must be followed by a letter', start);
        this.i++;
        return hex(letter.charCodeAt(0) % 32);
      }
      case '0':
        if (/[0-9]/.test(this.s[this.i] ?? '')) this.fail('an octal escape (not allowed in ECMAScript patterns with the u flag)', start);
        return '\\x00';
      case 'x': {
        const m = /^[0-9A-Fa-f]{2}/.exec(this.s.slice(this.i));
        if (!m) this.fail('"\\x" must be followed by two hex digits', start);
        this.i += 2;
        return hex(parseInt(m[0], 16));
      }
      case 'u':
        return literal(this.unicodeEscape(start));
      case 'k':
        this.fail('backreferences (\\k<name>) are not supported: ECMAScript and Python differ when the group did not take part', start);
        break;
      case 'p':
      case 'P':
        this.fail('Unicode property escapes (\\p{…}) are not supported by Python\'s re', start);
        break;
      case '-':
        if (inClass) return '\\-';
        break;
    }
    if (/[1-9]/.test(c)) this.fail('backreferences (\\1) are not supported: ECMAScript and Python differ when the group did not take part', start);
    if (SYNTAX.includes(c)) return `\\${c}`;
    this.fail(`"\\${c}" is not an escape ECMAScript patterns allow (with the u flag only syntax characters may be escaped)`, start);
  }

  /** After `\u` (this.i past the `u`): `XXXX`, a surrogate pair `XXXX\uXXXX`, or `{X…}`. */
  private unicodeEscape(start: number): number {
    if (this.s[this.i] === '{') {
      const m = /^\{([0-9A-Fa-f]+)\}/.exec(this.s.slice(this.i));
      if (!m || parseInt(m[1]!, 16) > 0x10ffff) this.fail('"\\u{…}" must hold a code point of at most 10FFFF', start);
      this.i += m[0].length;
      return parseInt(m[1]!, 16);
    }
    const m = /^[0-9A-Fa-f]{4}/.exec(this.s.slice(this.i));
    if (!m) this.fail('"\\u" must be followed by four hex digits or {…}', start);
    this.i += 4;
    const unit = parseInt(m[0], 16);
    const low = /^\\u([dD][c-fC-F][0-9A-Fa-f]{2})/.exec(this.s.slice(this.i));
    if (unit >= 0xd800 && unit <= 0xdbff && low) {
      this.i += 6;
      return 0x10000 + ((unit - 0xd800) << 10) + (parseInt(low[1]!, 16) - 0xdc00);
    }
    return unit;
  }

  private characterClass(): string {
    const start = this.i;
    this.i++;
    let negated = false;
    if (this.peek() === '^') {
      negated = true;
      this.i++;
    }
    let out = '';
    let empty = true;
    while (this.peek() !== ']') {
      if (this.i >= this.s.length) this.fail('a character class opened here is not closed', start);
      const atomAt = this.i;
      const first = this.classAtom();
      empty = false;
      if (this.peek() === '-' && this.peek(1) !== ']' && this.peek(1) !== undefined) {
        this.i++;
        const secondAt = this.i;
        const second = this.classAtom();
        if (first.cp === undefined || second.cp === undefined) this.fail('a range with a class such as \\d at one end', first.cp === undefined ? atomAt : secondAt);
        if (second.cp < first.cp) this.fail('a range whose ends are out of order', atomAt);
        out += `${first.text}-${second.text}`;
      } else {
        out += first.text;
      }
    }
    this.i++;
    if (empty) return negated ? '[\\x00-\\U0010ffff]' : '(?!)';
    return `[${negated ? '^' : ''}${out}]`;
  }

  /** One member of a class: its Python text, and its code point when it is one character. */
  private classAtom(): { text: string; cp?: number } {
    const c = this.s[this.i];
    if (c === '\\') {
      const start = this.i;
      const text = this.escape(true);
      const letter = this.s[start + 1] ?? '';
      if ('dDwWs'.includes(letter)) return { text };
      return { text, cp: codePointOf(text, this.s, start) };
    }
    const cp = this.s.codePointAt(this.i)!;
    this.i += String.fromCodePoint(cp).length;
    return { text: literal(cp), cp };
  }
}

/** The code point a translated single-character escape stands for. */
function codePointOf(text: string, source: string, start: number): number {
  const m = /^\\(?:x([0-9a-f]{2})|u([0-9a-f]{4})|U([0-9a-f]{8}))$/.exec(text);
  if (m) return parseInt(m[1] ?? m[2] ?? m[3] ?? '0', 16);
  const named: Record<string, number> = { '\\n': 10, '\\r': 13, '\\t': 9, '\\-': 45 };
  const known = named[text];
  if (known !== undefined) return known;
  if (text.startsWith('\\') && text.length === 2) return text.charCodeAt(1);
  return source.codePointAt(start + 1) ?? 0;
}

function hex(cp: number): string {
  return `\\x${cp.toString(16).padStart(2, '0')}`;
}

/** A character as Python `re` reads it literally, in or out of a class. */
function literal(cp: number): string {
  if (cp < 0x20 || cp === 0x7f) return hex(cp);
  if (cp < 0x80) {
    const ch = String.fromCharCode(cp);
    return /[A-Za-z0-9]/.test(ch) ? ch : `\\${ch}`;
  }
  if (cp >= 0xd800 && cp <= 0xdfff) return `\\u${cp.toString(16).padStart(4, '0')}`;
  if (cp > 0xffff) return `\\U${cp.toString(16).padStart(8, '0')}`;
  return String.fromCodePoint(cp);
}
