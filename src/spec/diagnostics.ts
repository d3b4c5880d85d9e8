// A problem found in a spec file, positioned so editors, terminals and CI annotations can point
// at the offending node. Lines and columns are 1-based.

export interface Diagnostic {
  file: string;
  line: number;
  column: number;
  /** Field path such as `spec.resources.market`; empty for problems with the file as a whole. */
  path: string;
  message: string;
  severity: 'error' | 'warning';
}

/** `runs/x.yaml:12:7 error spec.resources.market: must be one of …` */
export function formatDiagnostic(d: Diagnostic): string {
  const where = `${d.file}:${d.line}:${d.column}`;
  return d.path ? `${where} ${d.severity} ${d.path}: ${d.message}` : `${where} ${d.severity} ${d.message}`;
}

/** A GitHub Actions workflow command: `::error file=…,line=…,col=…::…` (shown as an annotation on the PR). */
export function formatGithubAnnotation(d: Diagnostic): string {
  const props = `file=${escapeProperty(d.file)},line=${d.line},col=${d.column}`;
  const text = d.path ? `${d.path}: ${d.message}` : d.message;
  return `::${d.severity} ${props}::${escapeData(text)}`;
}

// Escaping rules of GitHub's workflow commands (actions/toolkit, command.ts).
function escapeData(s: string): string {
  return s.replace(/%/g, '%25').replace(/\r/g, '%0D').replace(/\n/g, '%0A');
}

function escapeProperty(s: string): string {
  return escapeData(s).replace(/:/g, '%3A').replace(/,/g, '%2C');
}

export function hasErrors(diagnostics: readonly Diagnostic[]): boolean {
  return diagnostics.some((d) => d.severity === 'error');
}

/** By file, then position, errors before warnings at the same place. */
export function compareDiagnostics(a: Diagnostic, b: Diagnostic): number {
  if (a.file !== b.file) return a.file < b.file ? -1 : 1;
  if (a.line !== b.line) return a.line - b.line;
  if (a.column !== b.column) return a.column - b.column;
  if (a.severity !== b.severity) return a.severity === 'error' ? -1 : 1;
  return a.path < b.path ? -1 : a.path > b.path ? 1 : 0;
}
