// Color only where a person is watching a terminal that wants it. Off when NO_COLOR is set to
// anything non-empty (https://no-color.org, and it wins over FORCE_COLOR: it is the user's own
// "no"), when FORCE_COLOR is 0/false, when the stream is not a TTY, or when TERM is dumb.
// FORCE_COLOR with any other value turns color on for non-TTY output (CI logs that render it).
import type { Phase } from '../state/types.js';

export interface Colors {
  readonly enabled: boolean;
  red(s: string): string;
  green(s: string): string;
  yellow(s: string): string;
  blue(s: string): string;
  magenta(s: string): string;
  cyan(s: string): string;
  gray(s: string): string;
  bold(s: string): string;
  dim(s: string): string;
}

export type Env = Readonly<Record<string, string | undefined>>;

export function shouldUseColor(stream: { isTTY?: boolean } | undefined, env: Env = process.env): boolean {
  if (env.NO_COLOR) return false;
  const force = env.FORCE_COLOR;
  if (force !== undefined) {
    if (force === '0' || force.toLowerCase() === 'false') return false;
    return true;
  }
  if (!stream?.isTTY) return false;
  return env.TERM !== 'dumb';
}

export function createColors(enabled: boolean): Colors {
  const wrap = (open: number, close: number) => (s: string) => (enabled && s !== '' ? `\x1b[${open}m${s}\x1b[${close}m` : s);
  return {
    enabled,
    red: wrap(31, 39),
    green: wrap(32, 39),
    yellow: wrap(33, 39),
    blue: wrap(34, 39),
    magenta: wrap(35, 39),
    cyan: wrap(36, 39),
    gray: wrap(90, 39),
    bold: wrap(1, 22),
    dim: wrap(2, 22),
  };
}

export const noColors: Colors = createColors(false);

export function colorsFor(stream: { isTTY?: boolean } | undefined, env: Env = process.env): Colors {
  return createColors(shouldUseColor(stream, env));
}

/** Green for done, red for failed, yellow while getting ready, cyan while training, magenta while recovering. */
export function colorPhase(c: Colors, phase: Phase, text: string = phase): string {
  switch (phase) {
    case 'Completed':
      return c.green(text);
    case 'Failed':
      return c.red(text);
    case 'Provisioning':
    case 'Syncing':
    case 'Installing':
      return c.yellow(text);
    case 'Training':
      return c.cyan(text);
    case 'Interrupted':
    case 'Resuming':
      return c.magenta(text);
    case 'Pending':
    case 'Suspended':
    case 'Terminating':
    case 'Deleted':
      return c.gray(text);
  }
}
