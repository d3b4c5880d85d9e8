// Where the dashboard's data comes from: the same state store the CLI reads (file or shared S3,
// opened read-only: never the controller lock, never a lease), the providers' storage for logs
// and progress history, and the spec files for labels. It reads; it never reconciles or writes.
import type { ProviderRegistry } from '../providers/registry.js';
import type { Provider } from '../providers/types.js';
import { attemptKey } from '../reconciler/reconcile.js';
import { eventsOfIncarnation } from '../state/identity.js';
import { StatusUnreadableError } from '../state/status-record.js';
import type { RunStatus, StateStore } from '../state/types.js';
import { LogLines } from '../ui/log-lines.js';
import { runDetail, runSummary, type RunDetail, type RunSummary, type SeriesView } from './view.js';

/** Lines of the current attempt's log the run page shows. */
export const LOG_TAIL_LINES = 200;

export interface DashboardSourceOptions {
  store: StateStore;
  providers: ProviderRegistry;
  /** Labels per run name, from the spec files (re-read by the caller as it sees fit). */
  labels: () => Promise<Map<string, Record<string, string>>>;
  /** The progress history of every attempt of the record's current generation. */
  history: (provider: Provider, status: RunStatus) => Promise<SeriesView[]>;
  now?: () => number;
}

export interface RunsList {
  runs: RunSummary[];
  /** Records that could not be read: named with the problem, the rest still shown. */
  unreadable: Array<{ run: string; file: string; problem: string }>;
}

/** A run the store does not know (404). */
export class UnknownRunError extends Error {
  constructor(readonly run: string) {
    super(`no run named "${run}" in the state store`);
    this.name = 'UnknownRunError';
  }
}

interface LogCursor {
  key: string;
  cursor?: string;
  lines: LogLines;
  tail: string[];
  /** Serialises reads of one log: concurrent page loads share the cursor. */
  busy: Promise<unknown>;
}

export class DashboardSource {
  private readonly logs = new Map<string, LogCursor>();

  constructor(private readonly opts: DashboardSourceOptions) {}

  async list(): Promise<RunsList> {
    const labels = await this.opts.labels();
    const names = await this.opts.store.listRuns();
    const runs: RunSummary[] = [];
    const unreadable: RunsList['unreadable'] = [];
    for (const name of names) {
      try {
        const s = await this.opts.store.getStatus(name);
        if (s) runs.push(runSummary(s, labels.get(name) ?? {}));
      } catch (err) {
        // One damaged record is that run's problem, as in `runctl status`: name it, show the rest.
        if (!(err instanceof StatusUnreadableError)) throw err;
        unreadable.push({ run: name, file: err.file, problem: err.problem });
      }
    }
    runs.sort((a, b) => a.run.localeCompare(b.run));
    return { runs, unreadable };
  }

  async detail(run: string): Promise<RunDetail> {
    const status = await this.opts.store.getStatus(run);
    if (!status) throw new UnknownRunError(run);
    const labels = (await this.opts.labels()).get(run) ?? {};
    const events = eventsOfIncarnation(status.uid, await this.opts.store.readEvents(run));
    const provider = await this.opts.providers.get(status.spec.provider);
    const problems: string[] = [];
    // Storage that cannot be read now costs the page its curve or its log, not the whole page.
    const [history, log] = await Promise.all([
      this.opts.history(provider, status).catch((err: Error) => {
        problems.push(`progress history: ${err.message}`);
        return [];
      }),
      this.logTail(provider, status).catch((err: Error) => {
        problems.push(`log: ${err.message}`);
        return null;
      }),
    ]);
    return runDetail({ status, labels, events, history, log, problems, now: (this.opts.now ?? Date.now)() });
  }

  /**
   * The last LOG_TAIL_LINES lines of the current attempt's log. Reads on from where the previous
   * call stopped (the log is append-only), so a page refreshed every second reads only what is new.
   */
  private async logTail(provider: Provider, status: RunStatus): Promise<RunDetail['log']> {
    if (status.attempt < 1) return null;
    const generation = status.generation;
    const attempt = status.attempt;
    const key = `${status.run}/${status.uid}/${generation}/${attempt}`;
    let state = this.logs.get(status.run);
    if (!state || state.key !== key) {
      state = { key, lines: new LogLines(), tail: [], busy: Promise.resolve() };
      this.logs.set(status.run, state);
    }
    const s = state;
    const read = s.busy.then(async () => {
      for (;;) {
        const chunk = await provider.readLogs(attemptKey(status, generation, attempt), status.spec, s.cursor);
        const moved = chunk.cursor !== (s.cursor ?? '');
        s.cursor = chunk.cursor;
        s.tail.push(...s.lines.push(chunk.text));
        if (s.tail.length > LOG_TAIL_LINES) s.tail.splice(0, s.tail.length - LOG_TAIL_LINES);
        if (!moved) break;
      }
    });
    s.busy = read.catch(() => undefined);
    await read;
    const pending = s.lines.pending();
    const lines = pending !== undefined ? [...s.tail, pending].slice(-LOG_TAIL_LINES) : [...s.tail];
    return { generation, attempt, lines };
  }
}
