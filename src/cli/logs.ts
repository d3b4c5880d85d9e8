import type { Command } from 'commander';
import { GenerationNotFoundError, runLogs, RunNotFoundError, type LogReader } from '../reconciler/operations.js';
import { parseDuration } from '../spec/duration.js';
import { TERMINAL_PHASES } from '../state/types.js';
import { LogLines } from '../ui/log-lines.js';
import { addCommonOptions, cliContext, readOnlyStore, type CommonOptions } from './context.js';
import { UsageError } from './errors.js';

interface LogsOptions extends CommonOptions {
  follow?: boolean;
  attempt?: string;
  generation?: string;
  tail?: string;
  since?: string;
}

const FOLLOW_POLL_MS = 1000;
/** Erase the terminal line and return to its start: a progress bar's next state replaces the last. */
const REDRAW = '\r\x1b[2K';

export function register(program: Command): void {
  addCommonOptions(
    program
      .command('logs')
      .description("Print a run's logs from storage, every attempt in order; -f follows live output")
      .argument('<run>', 'run name')
      .option('-f, --follow', 'keep printing new output until the run settles')
      .option('--attempt <n>', 'only this attempt')
      .option('--generation <g>', 'an earlier generation (default: the current one)')
      .option('--tail <n>', 'only the last N lines (then, with -f, everything new)')
      .option('--since <duration>', 'only output stored in the last DURATION (e.g. 10m, 2h), to a few seconds'),
  ).action(async (run: string, opts: LogsOptions) => {
    const only = wholeNumber('--attempt', opts.attempt, 1);
    const generation = wholeNumber('--generation', opts.generation, 1);
    const tail = wholeNumber('--tail', opts.tail, 0);
    let since: Date | undefined;
    if (opts.since !== undefined) {
      try {
        since = new Date(Date.now() - parseDuration(opts.since));
      } catch {
        throw new UsageError(`--since must be a duration such as 90s, 10m or 2h (got "${opts.since}")`);
      }
    }
    const ctx = await cliContext(opts);
    const store = readOnlyStore(ctx);
    const out = new Output(process.stdout.isTTY === true && opts.follow === true, tail, run, only === undefined, generation !== undefined);
    try {
      const attempts = new Map<number, { cursor?: string; lines: LogLines; done: boolean }>();
      for (;;) {
        const { status, reader } = await runLogs(store, ctx.providers, run, generation);
        const wanted = only === undefined ? reader.attempts : reader.attempts.filter((a) => a === only);
        if (only !== undefined && wanted.length === 0 && !opts.follow) {
          throw new UsageError(`run "${run}" has no attempt ${only} in generation ${reader.generation} (attempts: ${reader.attempts.join(', ') || 'none yet'})`);
        }
        for (const attempt of wanted) {
          let state = attempts.get(attempt);
          if (!state) attempts.set(attempt, (state = { lines: new LogLines(), done: false }));
          if (state.done) continue;
          await readAll(reader, attempt, state, out, since);
          const ended = reader.ended(attempt);
          if (ended || !opts.follow) {
            // The job's last line without a newline stays a line of its own.
            const last = state.lines.flush();
            if (last !== undefined) out.line(attempt, reader.generation, last);
            state.done = ended;
          } else {
            out.pending(attempt, reader.generation, state.lines.pending());
          }
        }
        out.endOfBacklog();
        if (!opts.follow || TERMINAL_PHASES.includes(status.phase)) break;
        await new Promise((r) => setTimeout(r, FOLLOW_POLL_MS));
      }
      out.close();
    } catch (err) {
      if (err instanceof RunNotFoundError || err instanceof GenerationNotFoundError) {
        process.stderr.write(`runctl: ${err.message}\n`);
        process.exitCode = 1;
        return;
      }
      throw err;
    } finally {
      await ctx.providers.close();
    }
  });
}

/** Every chunk of the attempt's log stored so far: the provider returns a bounded amount per call. */
async function readAll(reader: LogReader, attempt: number, state: { cursor?: string; lines: LogLines }, out: Output, since: Date | undefined): Promise<void> {
  for (;;) {
    const chunk = await reader.read(attempt, state.cursor, since ? { since } : undefined);
    // Stop when the cursor stays put: text or not, a moved cursor may have more behind it
    // (segments skipped by --since move it without text).
    const moved = chunk.cursor !== (state.cursor ?? '');
    state.cursor = chunk.cursor;
    for (const line of state.lines.push(chunk.text)) out.line(attempt, reader.generation, line);
    out.flush();
    if (!moved) return;
  }
}

function wholeNumber(flag: string, value: string | undefined, min: number): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < min) {
    throw new UsageError(`${flag} must be a whole number from ${min} (got "${value}")`);
  }
  return n;
}

/**
 * Where lines go: stdout, with a header whenever the attempt changes (unless one attempt was
 * asked for), through a ring of the last N lines while --tail holds back the backlog, and with a
 * progress bar's latest state redrawn in place while following on a terminal.
 */
class Output {
  private buffer: string[] = [];
  private ring: Array<{ attempt: number; generation: number; text: string }> | undefined;
  private lastAttempt: number | undefined;
  private shownPending = false;

  constructor(
    private readonly redraw: boolean,
    private readonly tail: number | undefined,
    private readonly run: string,
    private readonly headers: boolean,
    private readonly namesGeneration: boolean,
  ) {
    if (tail !== undefined) this.ring = [];
  }

  line(attempt: number, generation: number, text: string): void {
    if (this.ring) {
      this.ring.push({ attempt, generation, text });
      if (this.ring.length > (this.tail as number)) this.ring.shift();
      return;
    }
    this.clearPending();
    this.header(attempt, generation);
    this.buffer.push(`${text}\n`);
  }

  pending(attempt: number, generation: number, text: string | undefined): void {
    if (this.ring || !this.redraw || !text) return;
    this.clearPending();
    this.header(attempt, generation);
    this.buffer.push(text);
    this.shownPending = true;
    this.flush();
  }

  /** The backlog has been read: --tail prints its last lines, and what follows streams. */
  endOfBacklog(): void {
    const ring = this.ring;
    if (!ring) return;
    this.ring = undefined;
    for (const l of ring) this.line(l.attempt, l.generation, l.text);
    this.flush();
  }

  flush(): void {
    if (this.buffer.length === 0) return;
    process.stdout.write(this.buffer.join(''));
    this.buffer = [];
  }

  close(): void {
    this.endOfBacklog();
    if (this.shownPending) this.buffer.push('\n');
    this.shownPending = false;
    this.flush();
  }

  private clearPending(): void {
    if (!this.shownPending) return;
    this.buffer.push(REDRAW);
    this.shownPending = false;
  }

  private header(attempt: number, generation: number): void {
    if (!this.headers || this.lastAttempt === attempt) return;
    this.lastAttempt = attempt;
    this.buffer.push(`==> ${this.run}${this.namesGeneration ? ` generation ${generation}` : ''} attempt ${attempt} <==\n`);
  }
}
