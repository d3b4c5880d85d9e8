// runctl.yaml: optional project-wide settings at the repository root, validated like a spec.
import { existsSync } from 'node:fs';
import path from 'node:path';
import type { Diagnostic } from './diagnostics.js';
import { formatPath } from './field-path.js';
import { displayPath, PROJECT_FILE } from './files.js';
import { checkNotifications } from './notification-checks.js';
import { schemaProblems } from './schema-messages.js';
import { PROJECT_SCHEMA_FILE, readSchema } from './schemas.js';
import { projectValidator } from './validators.js';
import type { ProjectConfig } from './types.js';
import { findStructureProblems, MAX_ALIAS_COUNT, offsetOf, positionAt, scalarSourceAt } from './yaml-document.js';
import { readYamlFile } from './yaml-file.js';

export function defaultProjectConfig(): ProjectConfig {
  return { defaults: {}, prune: false };
}

/** runctl.yaml at `repoRoot`, defaults filled in; the defaults alone when it is absent or invalid. */
export async function loadProjectConfig(repoRoot: string): Promise<{ config: ProjectConfig; diagnostics: Diagnostic[] }> {
  const abs = path.join(path.resolve(repoRoot), PROJECT_FILE);
  if (!existsSync(abs)) return { config: defaultProjectConfig(), diagnostics: [] };
  const file = displayPath(abs, process.cwd());
  const read = readYamlFile(abs, file);
  const diagnostics = [...read.diagnostics];
  const fallback = { config: defaultProjectConfig(), diagnostics };
  const lineCounter = read.lineCounter;
  if (!lineCounter || read.documents.length === 0) return fallback;
  const add = (offset: number, fieldPath: string, message: string): void => {
    diagnostics.push({ file, ...positionAt(lineCounter, offset), path: fieldPath, message, severity: 'error' });
  };
  const [first, second] = read.documents;
  if (second) {
    add(second.doc.range[0], '', `${PROJECT_FILE} must hold one YAML document`);
    return fallback;
  }
  const doc = first!.doc;
  if (doc.errors.length > 0) {
    for (const err of doc.errors) add(err.pos[0], '', `YAML syntax error: ${err.message.split('\n')[0]}`);
    return fallback;
  }
  const structure = findStructureProblems(doc, lineCounter).problems;
  for (const p of structure) add(p.offset, formatPath(p.path), p.message);
  if (structure.some((p) => p.fatal)) return fallback;
  let data: unknown;
  try {
    data = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
  } catch {
    add(doc.range[0], '', `YAML aliases expand to too much data (more than ${MAX_ALIAS_COUNT} alias uses); refused as a possible alias bomb`);
    return fallback;
  }
  const validate = projectValidator();
  const valid = validate(data);
  for (const p of schemaProblems(validate.errors ?? [], data, readSchema(PROJECT_SCHEMA_FILE), (path) => scalarSourceAt(doc, path)).problems) {
    add(offsetOf(doc, p.path, p.anchor), formatPath(p.path), p.message);
  }
  for (const p of checkNotifications((data as { notifications?: unknown } | undefined)?.notifications, ['notifications'])) {
    diagnostics.push({ file, ...positionAt(lineCounter, offsetOf(doc, p.path, p.anchor)), path: formatPath(p.path), message: p.message, severity: p.severity });
  }
  // Warnings (a webhook URL that is a credential) are shown, but the settings still apply.
  if (!valid || diagnostics.some((d) => d.severity === 'error')) return fallback;
  return { config: data as ProjectConfig, diagnostics };
}
