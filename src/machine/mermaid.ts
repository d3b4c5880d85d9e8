// Renders the run machine as a Mermaid state diagram (`runctl graph`), straight from the machine
// definition so the picture can never drift from the code.
import type { AnyStateNode } from 'xstate/graph';
import { EFFECT_TYPES } from './events.js';
import { runMachine } from './run-machine.js';

interface Edge {
  from: string;
  to: string;
  label: string;
}

const EFFECT_NAMES = new Set<string>(EFFECT_TYPES);

function nodeName(node: AnyStateNode): string {
  // Nested states are shown inside their parent: Terminating.Stopping -> Terminating_Stopping
  return node.path.join('_');
}

function guardText(guard: unknown): string {
  if (!guard) return '';
  if (typeof guard === 'string') return guard;
  if (typeof guard === 'object' && guard !== null && 'type' in guard) {
    const g = guard as { type: string; params?: Record<string, unknown> };
    const params = g.params ? Object.values(g.params).join(',') : '';
    return params ? `${g.type}(${params})` : g.type;
  }
  return 'guard';
}

function collect(node: AnyStateNode, edges: Edge[]): void {
  const from = nodeName(node);
  for (const [eventType, transitions] of node.transitions) {
    for (const t of transitions) {
      const targets = t.target ?? [];
      if (targets.length === 0) continue;
      const guard = guardText(t.guard);
      // Effects asked for on the transition itself (the prelaunch path), shown after a slash.
      const effects = transitionEffects(t.actions);
      const tail = effects.length ? ` / ${effects.join(', ')}` : '';
      for (const target of targets) {
        edges.push({ from, to: nodeName(target as AnyStateNode), label: `${guard ? `${eventType} [${guard}]` : eventType}${tail}` });
      }
    }
  }
  for (const t of node.always ?? []) {
    const guard = guardText(t.guard);
    for (const target of t.target ?? []) {
      edges.push({ from, to: nodeName(target as AnyStateNode), label: guard ? `[${guard}]` : 'always' });
    }
  }
  for (const child of Object.values(node.states) as AnyStateNode[]) collect(child, edges);
}

function transitionEffects(actions: readonly unknown[]): string[] {
  return actions
    .map((a) => (typeof a === 'string' ? a : typeof a === 'object' && a !== null && 'type' in a ? String((a as { type: string }).type) : ''))
    .filter((name) => EFFECT_NAMES.has(name));
}

function entryEffects(node: AnyStateNode): string[] {
  return node.entry
    .map((a) => (typeof a === 'string' ? a : typeof a === 'object' && a !== null && 'type' in a ? String((a as { type: string }).type) : ''))
    .filter((name) => EFFECT_NAMES.has(name));
}

export function toMermaid(): string {
  const lines = ['stateDiagram-v2', '  direction TB'];
  const root = runMachine.root as AnyStateNode;
  lines.push(`  [*] --> ${String(root.config.initial)}`);
  const states = Object.values(root.states) as AnyStateNode[];
  for (const state of states) {
    const children = Object.values(state.states) as AnyStateNode[];
    const effects = entryEffects(state);
    if (children.length > 0) {
      lines.push(`  state ${state.key} {`);
      lines.push(`    [*] --> ${nodeName(children[0] as AnyStateNode)}`);
      for (const child of children) {
        const childEffects = entryEffects(child);
        lines.push(`    state "${child.key}${childEffects.length ? ` / ${childEffects.join(', ')}` : ''}" as ${nodeName(child)}`);
      }
      lines.push('  }');
    } else if (effects.length > 0) {
      lines.push(`  ${state.key}: ${state.key} / ${effects.join(', ')}`);
    }
    if (state.type === 'final') lines.push(`  ${state.key} --> [*]`);
  }
  const edges: Edge[] = [];
  collect(root, edges);
  // Root-level handlers (LIMITS, FATAL) apply everywhere; show them once as a note.
  const seen = new Set<string>();
  for (const e of edges) {
    if (e.from === '' || e.from === 'run') continue;
    const line = `  ${e.from} --> ${e.to} : ${e.label}`;
    if (seen.has(line)) continue;
    seen.add(line);
    lines.push(line);
  }
  lines.push('  note right of Failed: FATAL (a provider error retrying cannot fix) leads here from any phase');
  return `${lines.join('\n')}\n`;
}
