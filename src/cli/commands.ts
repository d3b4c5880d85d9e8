// The list of commands, in the order `runctl --help` shows them. Each module exports
// `register(program)`, which adds one command with its options and a one-line description.
import type { Command } from 'commander';
import { register as validate } from './validate.js';
import { register as schema } from './schema.js';
import { register as iamPolicy } from './iam-policy.js';
import { register as reconcile } from './reconcile.js';
import { register as plan } from './plan.js';
import { register as apply } from './apply.js';
import { register as status } from './status.js';
import { register as describe } from './describe.js';
import { register as logs } from './logs.js';
import { register as interrupt } from './interrupt.js';
import { register as graph } from './graph.js';
import { register as doctor } from './doctor.js';
import { register as dashboard } from './dashboard.js';

export const commands: Array<(program: Command) => void> = [
  validate,
  reconcile,
  plan,
  apply,
  doctor,
  status,
  describe,
  logs,
  dashboard,
  interrupt,
  graph,
  schema,
  iamPolicy,
];
