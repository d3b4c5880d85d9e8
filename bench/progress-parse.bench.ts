// How fast does the agent read progress from a job's output? The real follower
// (src/agent/runctl_agent/progress_history.py) over job.log files written the way jobs write them:
// a tqdm bar redrawn with carriage returns, a Hugging Face Trainer (bar plus log dicts), nanoGPT's
// lines, a chatty log with no progress, and nanoGPT's lines read by a spec.progress.pattern. A
// refresh runs on the agent's heartbeat thread, so this is what bounds how much output a job may
// print before its progress lags (each refresh parses at most 0.5 s of it).
// Writes its section of docs/BENCHMARKS.md. Environment: BENCH_LINES (default 200000).
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { translateProgressPattern } from '../src/spec/progress-pattern.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const DOC = path.join(ROOT, 'docs/BENCHMARKS.md');
const LINES = Number(process.env.BENCH_LINES ?? 200_000);
const PATTERN = translateProgressPattern('^iter (?<step>\\d+): loss (?<loss>[\\d.]+), time (?<time_ms>[\\d.]+)ms').python;

const SCRIPT = String.raw`
import json, os, sys, tempfile, time
sys.path.insert(0, sys.argv[1])
from runctl_agent import progress_history
from runctl_agent.progress_history import ProgressFollower
from runctl_agent.storage import FileStorage

n, pattern = int(sys.argv[2]), sys.argv[3]
def tqdm(i): return "\r%3d%%|#####     | %d/%d [00:10<00:12, 43.10it/s, loss=%.4f]" % (i * 100 // n, i, n, 1.0 / (i + 1))
def trainer(i):
    line = "\r%3d%%|#####     | %d/%d [00:10<00:12,  4.00it/s]" % (i * 100 // n, i, n)
    return line + ("\n{'loss': %.4f, 'grad_norm': 1.25, 'learning_rate': 4.8e-05, 'epoch': %.2f}\n" % (1.0 / (i + 1), i / 1000.0) if i % 10 == 0 else "")
def nanogpt(i): return "iter %d: loss %.4f, time 12.34ms, mfu 1.23%%\n" % (i, 1.0 / (i + 1))
def chatty(i): return "INFO data loader worker %d fetched shard %d of the training set (no progress here)\n" % (i % 8, i)
cases = [("tqdm bar (carriage returns)", tqdm, None), ("HF Trainer (bar + log dicts)", trainer, None),
         ("nanoGPT lines", nanogpt, None), ("chatty log, no progress", chatty, None), ("nanoGPT, spec.progress.pattern", nanogpt, pattern)]
progress_history.PARSE_SECONDS = 1e9  # measure parsing, not the per-refresh budget
progress_history.READ_BYTES = 1 << 40
out = []
for name, make, pat in cases:
    d = tempfile.mkdtemp()
    data = "".join(make(i) for i in range(1, n + 1)).encode()
    with open(os.path.join(d, "job.log"), "wb") as f:
        f.write(data)
    f = ProgressFollower({"run": "b", "generation": 1, "attempt": 1}, FileStorage("file://" + d + "/store"), "a/", d, pat, lambda b: b, lambda m: None)
    f.begin(0)
    t0 = time.perf_counter()
    f.refresh()
    dt = time.perf_counter() - t0
    t1 = time.perf_counter()
    f.publish(force=True)
    pub = time.perf_counter() - t1
    size = os.path.getsize(os.path.join(d, "store", "a", "progress.json")) if f.history.points else 0
    out.append({"name": name, "bytes": len(data), "seconds": dt, "points": len(f.history.points), "publishSeconds": pub, "historyBytes": size})
print(json.dumps(out))
`;

const result = spawnSync('python3', ['-c', SCRIPT, path.join(ROOT, 'src/agent'), String(LINES), PATTERN], { encoding: 'utf8', maxBuffer: 1 << 26 });
if (result.status !== 0) {
  process.stderr.write(result.stderr);
  process.exit(1);
}
const rows = JSON.parse(result.stdout) as Array<{ name: string; bytes: number; seconds: number; points: number; publishSeconds: number; historyBytes: number }>;
const mb = (b: number) => (b / 1e6).toFixed(1);
const table = [
  '| output | size | parse | MB/s | history points | history object | write |',
  '|---|---:|---:|---:|---:|---:|---:|',
  ...rows.map(
    (r) =>
      `| ${r.name} | ${mb(r.bytes)} MB | ${r.seconds.toFixed(2)} s | ${(r.bytes / 1e6 / r.seconds).toFixed(1)} | ${r.points} | ${(r.historyBytes / 1024).toFixed(0)} KiB | ${(r.publishSeconds * 1000).toFixed(0)} ms |`,
  ),
];
process.stdout.write(`${table.join('\n')}\n`);

const slowest = rows.reduce((a, b) => (a.bytes / a.seconds < b.bytes / b.seconds ? a : b));
const section = [
  '<!-- bench:progress-parse:begin -->',
  '## Reading progress from a job\'s output (agent)',
  '',
  `**Slowest format: ${(slowest.bytes / 1e6 / slowest.seconds).toFixed(1)} MB/s (${slowest.name}); each refresh parses at most 0.5 s of output, so a job printing more than that per heartbeat has its progress lag, and a backlog over 64 MiB is skipped.**`,
  `Command: \`npm run bench -- progress-parse\` (\`BENCH_LINES\` changes the size; ${LINES.toLocaleString('en-US')} lines per case).`,
  '',
  'The real follower (`src/agent/runctl_agent/progress_history.py`) reads a job.log written as jobs write it, parses every',
  'line state and keeps the bounded history; "write" is one rewrite of the history object to `file://` storage.',
  '',
  ...table,
  '',
  `Measured ${new Date().toISOString().slice(0, 10)} on ${os.cpus().length} × ${os.cpus()[0]?.model.trim() ?? 'CPU'}, python3 from PATH, load average ${os.loadavg()[0]!.toFixed(1)} at the end`,
  '(the machine was shared with other work; treat absolute numbers as rough).',
  '<!-- bench:progress-parse:end -->',
].join('\n');
const current = readFileSync(DOC, 'utf8');
const marked = /<!-- bench:progress-parse:begin -->[\s\S]*<!-- bench:progress-parse:end -->/;
writeFileSync(DOC, marked.test(current) ? current.replace(marked, section) : `${current.trimEnd()}\n\n${section}\n`);
