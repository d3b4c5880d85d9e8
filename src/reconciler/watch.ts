// The watch source of `runctl reconcile --watch`: file events on the runs folder, debounced, plus a
// periodic full resync (level-triggered: a missed or coalesced event costs at most one interval).
// Editors save in many ways (write in place, write a temp file and rename it over, delete and
// re-create); all of them end in a burst of events on *.yaml files, and one reload after the burst
// settles reads whatever the folder holds then. Reloads never overlap: a burst during a reload
// queues exactly one more.
import path from 'node:path';
import { watch, type FSWatcher } from 'chokidar';

export interface SpecWatchOptions {
  /** Spec files or folders, as given on the command line. */
  paths: readonly string[];
  cwd?: string;
  /** Quiet time after the last event before reloading. */
  debounceMs?: number;
  /** Full resync every this often, events or not; 0 turns it off. */
  resyncIntervalMs?: number;
  /** Reload the desired state: `files` are the paths whose events caused it (empty for a resync). */
  reload(cause: { files: string[]; resync: boolean }): Promise<void>;
  onError?(err: Error): void;
}

export const DEFAULT_DEBOUNCE_MS = 200;
export const DEFAULT_RESYNC_INTERVAL_MS = 60_000;

const SPEC_FILE = /\.ya?ml$/i;

export class SpecWatcher {
  private readonly watcher: FSWatcher;
  private readonly debounceMs: number;
  private debounce?: NodeJS.Timeout;
  private resyncTimer?: NodeJS.Timeout;
  private changed = new Set<string>();
  private running?: Promise<void>;
  private queued?: { resync: boolean };
  private closed = false;

  private constructor(private readonly opts: SpecWatchOptions) {
    const cwd = opts.cwd ?? process.cwd();
    this.debounceMs = opts.debounceMs ?? DEFAULT_DEBOUNCE_MS;
    const roots = opts.paths.map((p) => path.resolve(cwd, p));
    this.watcher = watch(roots, {
      ignoreInitial: true,
      // Hidden folders (.git, editors' swap folders) and node_modules are never specs (as in the loader).
      ignored: (p: string) => {
        if (roots.includes(p)) return false;
        const base = path.basename(p);
        return base.startsWith('.') || base === 'node_modules';
      },
    });
    this.watcher.on('all', (event, file) => {
      const isDir = event === 'addDir' || event === 'unlinkDir';
      if (isDir || SPEC_FILE.test(file)) this.onEvent(file);
    });
    this.watcher.on('error', (err) => this.opts.onError?.(err instanceof Error ? err : new Error(String(err))));
    const every = opts.resyncIntervalMs ?? DEFAULT_RESYNC_INTERVAL_MS;
    if (every > 0) {
      this.resyncTimer = setInterval(() => this.schedule({ resync: true }), every);
      this.resyncTimer.unref();
    }
  }

  /** Starts watching; resolves once the initial scan is done (events after that are seen). */
  static async start(opts: SpecWatchOptions): Promise<SpecWatcher> {
    const w = new SpecWatcher(opts);
    await new Promise<void>((resolve) => w.watcher.once('ready', () => resolve()));
    return w;
  }

  /** Asks for a reload now (a git pull moved HEAD, a signal, a test). */
  trigger(resync = false): void {
    this.schedule({ resync });
  }

  /** Stops watching; waits for a reload in flight. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.debounce) clearTimeout(this.debounce);
    if (this.resyncTimer) clearInterval(this.resyncTimer);
    await this.watcher.close();
    await this.running;
  }

  private onEvent(file: string): void {
    if (this.closed) return;
    this.changed.add(file);
    if (this.debounce) clearTimeout(this.debounce);
    this.debounce = setTimeout(() => {
      this.debounce = undefined;
      this.schedule({ resync: false });
    }, this.debounceMs);
  }

  private schedule(req: { resync: boolean }): void {
    if (this.closed) return;
    if (this.running) {
      this.queued = { resync: (this.queued?.resync ?? false) || req.resync };
      return;
    }
    const files = [...this.changed];
    this.changed.clear();
    this.running = this.opts
      .reload({ files, resync: req.resync })
      .catch((err: unknown) => this.opts.onError?.(err instanceof Error ? err : new Error(String(err))))
      .finally(() => {
        this.running = undefined;
        const next = this.queued;
        this.queued = undefined;
        if (next) this.schedule(next);
      });
  }
}
