// The live view of `runctl reconcile`. On a terminal it redraws its lines in place (cursor up,
// clear line), at most every `throttleMs`, and ticks elapsed times once a second. Anywhere else
// (CI logs, pipes, files) it prints a plain line for a run only when something a reader cares
// about changed: phase, attempt, or progress crossing a tenth. Never escape codes there.
import type { RunStatus } from '../state/types.js';
import { colorsFor, noColors, type Colors, type Env } from './colors.js';
import { changeKey, DEFAULT_WIDTH, renderProgress, renderRunBlocks, type ExtrasByRun } from './progress.js';

export interface LiveDisplayOptions {
  /** Where output goes; the display does no other I/O. */
  write: (chunk: string) => void;
  /** Redraw in place (a terminal) or print a line per change (anything else). */
  tty: boolean;
  colors?: Colors;
  /** Terminal columns; a function so a resize is picked up on the next draw. Default 100. */
  width?: number | (() => number | undefined);
  /** Least time between two redraws on a terminal. Default 100 ms. */
  throttleMs?: number;
  /** Redraw this often on a terminal even without updates, so elapsed times move. 0 = never. Default 1000. */
  refreshMs?: number;
  clock?: () => number;
}

const CSI = '\x1b[';

export class LiveDisplay {
  private statuses: readonly RunStatus[] = [];
  private extras: ExtrasByRun | undefined;
  private drawnLines = 0;
  private lastFrame = '';
  private lastDrawAt = -Infinity;
  private pendingDraw?: ReturnType<typeof setTimeout>;
  private refresher?: ReturnType<typeof setInterval>;
  private readonly printedKeys = new Map<string, string>();
  private closed = false;
  private readonly clock: () => number;
  private readonly colors: Colors;

  constructor(private readonly opts: LiveDisplayOptions) {
    this.clock = opts.clock ?? Date.now;
    this.colors = opts.colors ?? noColors;
  }

  /** A display for a real stream: TTY, colors and width decided from the stream and environment. */
  static forStream(
    stream: { write(chunk: string): unknown; isTTY?: boolean; columns?: number },
    env: Env = process.env,
    opts: Partial<Omit<LiveDisplayOptions, 'write' | 'tty'>> = {},
  ): LiveDisplay {
    return new LiveDisplay({
      write: (chunk) => void stream.write(chunk),
      tty: stream.isTTY === true && env.TERM !== 'dumb',
      colors: colorsFor(stream, env),
      width: () => stream.columns,
      ...opts,
    });
  }

  update(statuses: readonly RunStatus[], extras?: ExtrasByRun): void {
    if (this.closed) return;
    this.statuses = statuses;
    this.extras = extras;
    if (!this.opts.tty) {
      this.printChanges();
      return;
    }
    this.startRefresher();
    const wait = this.lastDrawAt + (this.opts.throttleMs ?? 100) - this.clock();
    if (wait <= 0) this.draw();
    else if (!this.pendingDraw) {
      this.pendingDraw = setTimeout(() => this.draw(), wait);
      this.pendingDraw.unref?.();
    }
  }

  /** Prints a line of its own above the live lines (a terminal) or in sequence (plain). */
  log(line: string): void {
    if (!this.opts.tty || this.drawnLines === 0) {
      this.opts.write(`${line}\n`);
      return;
    }
    this.opts.write(`${CSI}${this.drawnLines}A\r${CSI}J${line}\n`);
    this.drawnLines = 0;
    this.lastFrame = '';
    this.draw();
  }

  /** Draws a throttled frame now, if one is waiting. */
  flush(): void {
    if (this.pendingDraw) this.draw();
  }

  /** Leaves the final state on screen and stops all timers. */
  close(): void {
    if (this.closed) return;
    this.flush();
    this.closed = true;
    if (this.refresher) clearInterval(this.refresher);
    this.refresher = undefined;
  }

  private width(): number {
    const w = typeof this.opts.width === 'function' ? this.opts.width() : this.opts.width;
    return w && w > 0 ? w : DEFAULT_WIDTH;
  }

  private draw(): void {
    if (this.pendingDraw) clearTimeout(this.pendingDraw);
    this.pendingDraw = undefined;
    this.lastDrawAt = this.clock();
    // One column short of the edge: a line that fills the row would wrap on some terminals and
    // throw off the count of lines to move back over.
    const lines = renderProgress(this.statuses, this.extras, { now: this.clock(), width: this.width() - 1, colors: this.colors });
    const frame = lines.join('\n');
    if (frame === this.lastFrame) return;
    let out = this.drawnLines > 0 ? `${CSI}${this.drawnLines}A` : '';
    for (const line of lines) out += `\r${CSI}2K${line}\n`;
    if (lines.length < this.drawnLines) out += `${CSI}J`;
    this.opts.write(out);
    this.drawnLines = lines.length;
    this.lastFrame = frame;
  }

  private printChanges(): void {
    const blocks = renderRunBlocks(this.statuses, this.extras, { now: this.clock(), width: this.width(), colors: this.colors });
    let out = '';
    this.statuses.forEach((s, i) => {
      const key = changeKey(s);
      if (this.printedKeys.get(s.run) === key) return;
      this.printedKeys.set(s.run, key);
      out += `${blocks[i]?.lines[0] ?? s.run}\n`;
    });
    if (out) this.opts.write(out);
  }

  private startRefresher(): void {
    const every = this.opts.refreshMs ?? 1000;
    if (this.refresher || every <= 0) return;
    this.refresher = setInterval(() => this.draw(), every);
    this.refresher.unref?.();
  }
}
