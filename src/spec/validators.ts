// The compiled schema validators. They are ajv's standalone output (generated/, built by
// compile-validators.ts with allErrors and useDefaults), so nothing is compiled at run time.
import type { ErrorObject } from 'ajv';
import { validateProject, validateTrainingRun } from './generated/schema-validators.js';

export interface SchemaValidator {
  (data: unknown): boolean;
  errors?: ErrorObject[] | null;
}

export function trainingRunValidator(): SchemaValidator {
  return validateTrainingRun as SchemaValidator;
}

export function projectValidator(): SchemaValidator {
  return validateProject as SchemaValidator;
}
