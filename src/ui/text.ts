// Measuring and cutting text that may carry color codes, and making untrusted text (job output,
// provider messages) safe to print: escape sequences from a log could move the cursor, retitle
// the terminal or break the live display's line count.

// CSI sequences (colors, cursor moves), OSC sequences (titles, links) and two-byte escapes.
const ANSI = /\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]/g;
const CONTROL = /[\x00-\x08\x0b-\x1f\x7f-\x9f]/g;

export function stripAnsi(s: string): string {
  return s.replace(ANSI, '');
}

/** Columns the text occupies on a terminal (one per code point; wide glyphs are not special-cased). */
export function visibleWidth(s: string): number {
  let n = 0;
  for (const _ of stripAnsi(s)) n++;
  return n;
}

/** One printable line from untrusted text: the part after the last carriage return, no escapes. */
export function sanitizeLine(s: string): string {
  const withoutCr = s.replace(/[\r\n]+$/, '');
  const lastCr = withoutCr.lastIndexOf('\r');
  const visible = lastCr >= 0 ? withoutCr.slice(lastCr + 1) : withoutCr;
  return visible.replace(ANSI, '').replace(/\t/g, '  ').replace(/\n/g, ' ').replace(CONTROL, '');
}

/** The first line of a possibly multi-line message, noting how many lines were left out. */
export function firstLine(s: string): string {
  const lines = s.split(/\r?\n/).filter((l) => l.trim() !== '');
  if (lines.length === 0) return '';
  const head = sanitizeLine(lines[0] as string);
  return lines.length > 1 ? `${head} (+${lines.length - 1} more lines)` : head;
}

/** Cuts `s` to `width` visible columns, ending in `…` when cut; color codes are kept intact. */
export function truncate(s: string, width: number): string {
  if (visibleWidth(s) <= width) return s;
  if (width <= 0) return '';
  let out = '';
  let used = 0;
  let sawAnsi = false;
  const re = new RegExp(ANSI.source, 'y');
  for (let i = 0; i < s.length && used < width - 1; ) {
    re.lastIndex = i;
    const m = re.exec(s);
    if (m) {
      out += m[0];
      sawAnsi = true;
      i += m[0].length;
      continue;
    }
    const ch = String.fromCodePoint(s.codePointAt(i) as number);
    out += ch;
    used++;
    i += ch.length;
  }
  return `${out}…${sawAnsi ? '\x1b[0m' : ''}`;
}

export function padEnd(s: string, width: number): string {
  return s + ' '.repeat(Math.max(0, width - visibleWidth(s)));
}

export function padStart(s: string, width: number): string {
  return ' '.repeat(Math.max(0, width - visibleWidth(s))) + s;
}
