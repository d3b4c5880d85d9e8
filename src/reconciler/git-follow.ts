// Following a git repository on a control host: `git pull --ff-only` on an interval, and the commit
// each spec came from (recorded in the run's status and events, like Argo CD's sync revision).
// Uses the git command line, as the user's own checkout does: same credentials, same config.
import { execFile } from 'node:child_process';
import path from 'node:path';

export interface GitResult {
  ok: boolean;
  stdout: string;
  stderr: string;
}

export type GitRunner = (args: string[], cwd: string, timeoutMs: number) => Promise<GitResult>;

/** Runs git without a terminal prompt (a pull that needs credentials fails instead of hanging). */
export const runGit: GitRunner = (args, cwd, timeoutMs) =>
  new Promise((resolve) => {
    execFile(
      'git',
      args,
      { cwd, timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024, env: { ...process.env, GIT_TERMINAL_PROMPT: '0', LC_ALL: 'C' } },
      (err, stdout, stderr) => {
        const why = err && !stderr ? ((err as NodeJS.ErrnoException).code === 'ENOENT' ? 'git is not installed (not on PATH)' : err.message) : '';
        resolve({ ok: !err, stdout: String(stdout), stderr: redactUrls(String(stderr) || why) });
      },
    );
  });

/** Credentials in remote URLs (`https://user:token@host`) never reach a log. */
export function redactUrls(text: string): string {
  return text.replace(/(\b[a-z][a-z0-9+.-]*:\/\/)[^/\s@]+@/gi, '$1***@');
}

export interface RepoRevision {
  /** HEAD's commit. */
  commit: string;
  /** Absolute paths with uncommitted changes (modified, added, untracked). */
  dirty: Set<string>;
}

/** HEAD and the dirty files of the checkout holding `dir`; undefined when it is not in git (or has no commit yet). */
export async function readRevision(dir: string, git: GitRunner = runGit): Promise<RepoRevision | undefined> {
  const [head, top] = await Promise.all([git(['rev-parse', '--verify', '-q', 'HEAD'], dir, 10_000), git(['rev-parse', '--show-toplevel'], dir, 10_000)]);
  if (!head.ok || !top.ok) return undefined;
  const root = top.stdout.trim();
  const status = await git(['status', '--porcelain=v1', '-z', '--untracked-files=all'], root, 30_000);
  const dirty = new Set<string>();
  if (status.ok) {
    const fields = status.stdout.split('\0');
    for (let i = 0; i < fields.length; i++) {
      const entry = fields[i] as string;
      if (entry.length < 4) continue;
      dirty.add(path.resolve(root, entry.slice(3)));
      // A rename or copy is followed by its source path: skip it.
      if (entry[0] === 'R' || entry[0] === 'C') i++;
    }
  }
  return { commit: head.stdout.trim(), dirty };
}

/** The revision a spec file is recorded under: HEAD's commit, with `-dirty` when the file has uncommitted changes. */
export function revisionFor(rev: RepoRevision, file: string, cwd = process.cwd()): string {
  return rev.dirty.has(path.resolve(cwd, file)) ? `${rev.commit}-dirty` : rev.commit;
}

export interface PullOutcome {
  ok: boolean;
  before?: string;
  after?: string;
  /** Why the pull failed, from git's own output (credentials redacted). */
  message?: string;
}

export interface GitFollowerOptions {
  repoRoot: string;
  intervalMs: number;
  /** After every pull attempt; `after !== before` when new commits arrived. */
  onPull(outcome: PullOutcome): void | Promise<void>;
  git?: GitRunner;
}

/** Pulls on an interval; a failed pull is reported and tried again next time, never fatal. */
export class GitFollower {
  private timer?: NodeJS.Timeout;
  private inflight?: Promise<PullOutcome>;
  private readonly git: GitRunner;

  constructor(private readonly opts: GitFollowerOptions) {
    this.git = opts.git ?? runGit;
  }

  /** Checks that the folder is a git checkout with an upstream to pull from; a message saying what to fix otherwise. */
  static async check(repoRoot: string, git: GitRunner = runGit): Promise<string | undefined> {
    const inside = await git(['rev-parse', '--is-inside-work-tree'], repoRoot, 10_000);
    if (!inside.ok || inside.stdout.trim() !== 'true') {
      return `--pull-interval needs the runs in a git checkout, and ${repoRoot} is not one (${firstLine(inside.stderr) || 'git rev-parse failed'})`;
    }
    const upstream = await git(['rev-parse', '--abbrev-ref', '--symbolic-full-name', '@{upstream}'], repoRoot, 10_000);
    if (!upstream.ok) {
      return `--pull-interval: the current branch of ${repoRoot} has no upstream to pull from; set one with \`git branch --set-upstream-to=origin/main\``;
    }
    return undefined;
  }

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => void this.pull().catch(() => undefined), this.opts.intervalMs);
    this.timer.unref();
  }

  /** One pull now (joins a pull in flight). */
  pull(): Promise<PullOutcome> {
    this.inflight ??= this.pullOnce().finally(() => {
      this.inflight = undefined;
    });
    return this.inflight;
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.inflight;
  }

  private async pullOnce(): Promise<PullOutcome> {
    const root = this.opts.repoRoot;
    const head = async () => {
      const r = await this.git(['rev-parse', '--verify', '-q', 'HEAD'], root, 10_000);
      return r.ok ? r.stdout.trim() : undefined;
    };
    const before = await head();
    const pulled = await this.git(['pull', '--ff-only', '--quiet'], root, Math.max(30_000, this.opts.intervalMs));
    const after = await head();
    const outcome: PullOutcome = pulled.ok
      ? { ok: true, before, after }
      : { ok: false, before, after, message: `git pull --ff-only in ${root} failed: ${lastLines(pulled.stderr) || 'no output'}` };
    await this.opts.onPull(outcome);
    return outcome;
  }
}

function firstLine(text: string): string {
  return text.trim().split('\n')[0] ?? '';
}

function lastLines(text: string): string {
  return text.trim().split('\n').slice(-3).join(' / ');
}

/** Adds the git revision of each spec file to a desired state, when the runs are in a git checkout. */
export async function withRevisions<T extends { revisionOf?: (file: string) => string | undefined }>(desired: T, repoRoot: string, git: GitRunner = runGit): Promise<T> {
  const rev = await readRevision(repoRoot, git);
  if (rev) desired.revisionOf = (file) => revisionFor(rev, file);
  return desired;
}
