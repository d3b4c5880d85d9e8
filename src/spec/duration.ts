// Durations in specs are strings: a number with a unit (ms, s, m, h, d), or several in a row,
// e.g. `90s`, `15m`, `48h`, `1h30m`, `1.5h`. The same grammar is the `duration` pattern in
// schema/trainingrun.schema.json (a test keeps the two equal).

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

export const DURATION_PATTERN = '^(?:[0-9]+(?:\\.[0-9]+)?(?:ms|s|m|h|d))+$';
const WHOLE = new RegExp(DURATION_PATTERN);
const PART = /([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)/g;

/** Milliseconds in `text`; throws on anything that is not a duration. */
export function parseDuration(text: string): number {
  if (typeof text !== 'string' || !WHOLE.test(text)) {
    throw new Error(`invalid duration ${JSON.stringify(text)}: use a number with a unit, e.g. 90s, 15m, 48h`);
  }
  let ms = 0;
  for (const [, amount, unit] of text.matchAll(PART)) ms += Number(amount) * (UNIT_MS[unit as string] as number);
  return Math.round(ms);
}

/** Compact human form, readable back by parseDuration: 450ms, 42s, 5m, 1m05s, 2h30m, 3d4h. */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return s % 60 ? `${m}m${String(s % 60).padStart(2, '0')}s` : `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 48) return m % 60 ? `${h}h${String(m % 60).padStart(2, '0')}m` : `${h}h`;
  const d = Math.floor(h / 24);
  return h % 24 ? `${d}d${h % 24}h` : `${d}d`;
}

const UNIT_WORDS: Array<[RegExp, string]> = [
  [/^(?:milliseconds?|millis|msecs?)$/, 'ms'],
  [/^(?:seconds?|secs?|sec\.?)$/, 's'],
  [/^(?:minutes?|mins?)$/, 'm'],
  [/^(?:hours?|hrs?)$/, 'h'],
  [/^(?:days?)$/, 'd'],
];

/** A likely intended duration for a near miss such as `5 min`, `10 Minutes` or `2H`; undefined if none. */
/**
 * The durations a clock-style time could mean: `1:30:15` is 1h30m15s; `1:30` is 1h30m or 1m30s
 * (YAML 1.2 reads both as text; YAML 1.1 read them as sexagesimal numbers). Empty otherwise.
 */
export function clockDurations(text: string): string[] {
  const m = /^\s*([0-9]+):([0-5][0-9])(?::([0-5][0-9]))?\s*$/.exec(text);
  if (!m) return [];
  const [a, b, c] = [Number(m[1]), Number(m[2]), m[3] === undefined ? undefined : Number(m[3])];
  const join = (parts: Array<[number, string]>) => parts.filter(([n], i) => n > 0 || i === 0).map(([n, u]) => `${n}${u}`).join('') || '0s';
  if (c !== undefined) return [join([[a, 'h'], [b, 'm'], [c, 's']])];
  return [join([[a, 'h'], [b, 'm']]), join([[a, 'm'], [b, 's']])];
}

export function suggestDuration(text: string): string | undefined {
  const m = /^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z.]+)\s*$/.exec(text);
  if (!m) return undefined;
  const unit = (m[2] as string).toLowerCase();
  const short = UNIT_MS[unit] !== undefined ? unit : UNIT_WORDS.find(([re]) => re.test(unit))?.[1];
  if (!short) return undefined;
  const candidate = `${m[1]}${short}`;
  return candidate !== text && WHOLE.test(candidate) ? candidate : undefined;
}
