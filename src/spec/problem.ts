import type { Segment } from './field-path.js';

/** A problem in one document, before it is given a source position. */
export interface Problem {
  path: Segment[];
  message: string;
  severity: 'error' | 'warning';
  /** Point at the field's value (default) or at its key (unknown and misnamed fields). */
  anchor?: 'value' | 'key';
  /** A known source offset, when the check found the node itself. */
  offset?: number;
}

export function error(path: Segment[], message: string, anchor: 'value' | 'key' = 'value'): Problem {
  return { path, message, severity: 'error', anchor };
}

export function warning(path: Segment[], message: string, anchor: 'value' | 'key' = 'value'): Problem {
  return { path, message, severity: 'warning', anchor };
}

/** Paths under spec.secrets hold secret references; messages never quote what is there. */
export function isSecretPath(path: readonly Segment[]): boolean {
  return path.length >= 3 && path[0] === 'spec' && path[1] === 'secrets';
}

/** How a value is quoted in "(got …)": short, and never the value itself under spec.secrets. */
export function describeValue(value: unknown): string {
  if (value === null || value === undefined) return 'an empty value';
  if (typeof value === 'string') {
    const quoted = JSON.stringify(value);
    return quoted.length > 62 ? `${quoted.slice(0, 58)}…"` : quoted;
  }
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  if (Array.isArray(value)) return 'a list';
  if (value instanceof Uint8Array) return 'binary data';
  return 'a mapping';
}

export function kindOf(value: unknown): string {
  if (value === null || value === undefined) return 'an empty value';
  if (typeof value === 'string') return 'a string';
  if (typeof value === 'number') return 'a number';
  if (typeof value === 'boolean') return 'a boolean';
  if (Array.isArray(value)) return 'a list';
  return 'a mapping';
}
