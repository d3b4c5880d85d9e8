// The two JSON Schemas in schema/ (the public contract), read once per process.
import { readFileSync } from 'node:fs';

export type JsonSchema = Record<string, unknown>;

export const TRAINING_RUN_SCHEMA_FILE = new URL('../../schema/trainingrun.schema.json', import.meta.url);
export const PROJECT_SCHEMA_FILE = new URL('../../schema/project.schema.json', import.meta.url);

const schemaCache = new Map<string, JsonSchema>();

export function readSchema(file: URL): JsonSchema {
  let schema = schemaCache.get(file.href);
  if (!schema) {
    schema = JSON.parse(readFileSync(file, 'utf8')) as JsonSchema;
    schemaCache.set(file.href, schema);
  }
  return schema;
}
