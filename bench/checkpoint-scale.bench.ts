// Checkpoint storage at scale (issue 9, acceptance 3): a job in the Hugging Face Trainer layout
// saves `checkpoint-<step>/` folders of 4 × 64 MiB shards, keeping its newest four, under the real
// agent, on file:// storage (BENCH_SAVES saves, default 7) and on moto's S3 (BENCH_S3_SAVES,
// default 5: the fifth save is the first the job rotates; BENCH_SHARD_MIB / BENCH_S3_SHARD_MIB
// change the shard size). The same job runs under today's agent (this repository just before
// checkpoints went through the content-addressed store: a staging copy of the whole folder, then
// one recursive upload, taken from git) and under this checkout's, side by side. The job says each
// save is complete (`RUNCTL_CHECKPOINT_SAVED`, as a TrainerCallback's on_save would), so both
// agents sync at once and the time measured is the copying, not a sync interval.
//
// For each save it measures the time from the job's save being complete (the job writes the time)
// to a published manifest naming the new shards (storage polled every 50 ms), and, right after,
// a plain copy of the same new files to the same storage (`cp -r`, `aws s3 cp --recursive`).
// Bytes written to storage: on S3, the request bodies a counting proxy in front of moto sees; on
// file://, what the agent reports (this checkout: its store's byte counter, copies of rejected
// files included; today's: the sum of its "published checkpoint" sizes, which is exactly what its
// put_tree copies). Extra disk on the instance: the peak size of the agent's state dir (staging
// copies, snapshot temp files; links to the job's own files take no space and are not
// counted), sampled every 20 ms. Writes its section of docs/BENCHMARKS.md; prints each save's
// figures, and BENCH_AGENT_LOG=<prefix> keeps each agent's log as <prefix>-<backend>-<agent>.log.
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createBundle } from '../src/agent/bundle.js';
import type { AgentConfig } from '../src/agent/config-types.js';
import { bundleKey, checkpointsPrefix } from '../src/agent/layout.js';
import { createBucket, startMoto, type MotoServer } from '../test/support/moto.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const DOC = path.join(ROOT, 'docs/BENCHMARKS.md');
const SIZES = {
  file: { shardMiB: Number(process.env.BENCH_SHARD_MIB ?? 64), saves: Number(process.env.BENCH_SAVES ?? 7) },
  // moto keeps objects in one Python process and today's agent uploads every kept folder again
  // on each save, so the S3 run stops one save after the job first rotates its folders.
  s3: { shardMiB: Number(process.env.BENCH_S3_SHARD_MIB ?? 64), saves: Number(process.env.BENCH_S3_SAVES ?? 5) },
};
// BENCH_BACKENDS=file (or s3) runs one backend; the other's rows are kept from docs/BENCHMARKS.md.
const BACKENDS = (process.env.BENCH_BACKENDS ?? 'file,s3').split(',').filter((b): b is 'file' | 's3' => b === 'file' || b === 's3');
const SHARDS = 4;
const JOB_KEEPS = 4;
const AGENT_KEEP = 2;
const BUCKET = 'runctl-bench';
const MIB = 1024 * 1024;

const JOB = `
import json, os, shutil, sys, time
ck = os.environ["RUNCTL_CHECKPOINT_DIR"]
ctl = os.environ["BENCH_CTL"]
shard = int(os.environ["BENCH_SHARD_BYTES"])
saves = int(os.environ["BENCH_SAVES"])
for n in range(1, saves + 1):
    while not os.path.exists(os.path.join(ctl, "go-%d" % n)):
        time.sleep(0.02)
    step = n * 100
    d = os.path.join(ck, "checkpoint-%d" % step)
    os.makedirs(d)
    for i in range(${SHARDS}):
        with open(os.path.join(d, "model-%05d-of-%05d.safetensors" % (i + 1, ${SHARDS})), "wb") as f:
            left = shard
            while left:
                chunk = os.urandom(min(left, 4 << 20))
                f.write(chunk)
                left -= len(chunk)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump({"model_type": "gpt2", "n_layer": 12}, f)
    with open(os.path.join(d, "trainer_state.json"), "w") as f:
        json.dump({"global_step": step}, f)
    names = sorted((x for x in os.listdir(ck) if x.startswith("checkpoint-")), key=lambda x: int(x.split("-")[1]))
    for old in names[:-${JOB_KEEPS}]:
        shutil.rmtree(os.path.join(ck, old))
    with open(os.path.join(ctl, "saved-%d.tmp" % n), "w") as f:
        f.write(repr(time.time()))
    os.replace(os.path.join(ctl, "saved-%d.tmp" % n), os.path.join(ctl, "saved-%d" % n))
    print("step=%d/%d saved" % (step, saves * 100), flush=True)
    print("RUNCTL_CHECKPOINT_SAVED", flush=True)
`;

interface Figures {
  backend: 'file' | 's3';
  shardMiB: number;
  saves: number;
  agent: 'today' | 'new';
  bytesWritten: number;
  newBytes: number;
  peakExtraDisk: number;
  largestNewFile: number;
  saveToSafe: number[];
  plainCopy: number[];
  storedAtEnd?: number;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? (s[Math.floor((s.length - 1) / 2)]! + s[Math.ceil((s.length - 1) / 2)]!) / 2 : NaN;
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Today's agent: the package as it was just before checkpoints.py used the content-addressed
 * store (the parent of the commit that wired it in; HEAD while that commit is not made yet),
 * built into a zipapp from git.
 */
function todayAgent(dir: string): string {
  const wired = execFileSync('git', ['log', '--format=%H', '-S', 'CheckpointStore', '--', 'src/agent/runctl_agent/checkpoints.py'], { cwd: ROOT, encoding: 'utf8' })
    .trim()
    .split('\n')
    .filter(Boolean)
    .at(-1);
  const rev = wired ? `${wired}^` : 'HEAD';
  const tree = path.join(dir, 'today');
  mkdirSync(tree);
  execFileSync('sh', ['-c', `git archive ${rev} src/agent | tar -x -C "${tree}"`], { cwd: ROOT });
  const file = path.join(dir, 'runctl-agent-today.pyz');
  execFileSync('python3', [path.join(tree, 'src/agent/build-pyz.py'), file], { cwd: ROOT });
  return file;
}

function newAgent(): string {
  execFileSync('python3', [path.join(ROOT, 'src/agent/build-pyz.py')], { cwd: ROOT });
  return path.join(ROOT, 'dist/agent/runctl-agent.pyz');
}

/** A loopback proxy in front of moto that counts the request body bytes of writes. */
async function countingProxy(target: string): Promise<{ url: string; written: () => number; close: () => Promise<void> }> {
  const upstream = new URL(target);
  let written = 0;
  const server = http.createServer((req, res) => {
    const counting = req.method === 'PUT' || req.method === 'POST';
    const fwd = http.request(
      { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers },
      (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      },
    );
    fwd.on('error', () => res.destroy());
    req.on('data', (d: Buffer) => {
      if (counting) written += d.length;
    });
    req.pipe(fwd);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    written: () => written,
    close: () => new Promise((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}

function dirBytes(dir: string, skip: (name: string) => boolean): number {
  let total = 0;
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return 0;
  }
  for (const name of names) {
    if (skip(name)) continue;
    const full = path.join(dir, name);
    try {
      const st = lstatSync(full);
      // A link to the job's own file (the S3 upload folder: symbolic links now, hard links
      // before) takes no extra space.
      total += st.isDirectory() ? dirBytes(full, () => false) : st.isSymbolicLink() || st.nlink > 1 ? 0 : st.size;
    } catch {
      /* removed while we looked */
    }
  }
  return total;
}

async function runOne(backend: 'file' | 's3', agent: 'today' | 'new', agentPath: string, moto?: MotoServer): Promise<Figures> {
  const { shardMiB: SHARD_MIB, saves: SAVES } = SIZES[backend];
  const root = mkdtempSync(path.join(os.tmpdir(), `runctl-bench-ckpt-${backend}-${agent}-`));
  const proxy = moto ? await countingProxy(moto.url) : undefined;
  const prefix = `${agent}-${Date.now()}`;
  const awsEnv: NodeJS.ProcessEnv = {
    ...process.env,
    AWS_ACCESS_KEY_ID: 'testing',
    AWS_SECRET_ACCESS_KEY: 'testing',
    AWS_DEFAULT_REGION: 'us-east-1',
    AWS_CONFIG_FILE: path.join(root, 'no-aws-config'),
    AWS_SHARED_CREDENTIALS_FILE: path.join(root, 'no-aws-credentials'),
    AWS_PAGER: '',
  };
  delete awsEnv.AWS_PROFILE;
  try {
    const storageDir = path.join(root, 'storage');
    const ctl = path.join(root, 'ctl');
    const code = path.join(root, 'code');
    mkdirSync(storageDir, { recursive: true });
    mkdirSync(ctl);
    mkdirSync(code);
    writeFileSync(path.join(code, 'job.py'), JOB);
    const bundle = await createBundle(root, { path: 'code', exclude: [] }, { outDir: path.join(storageDir, 'bundles') });
    const storage = backend === 'file' ? `file://${storageDir}` : `s3://${BUCKET}/${prefix}`;
    if (backend === 's3') {
      execFileSync('aws', ['s3', 'cp', '--only-show-errors', bundle.file, `${storage}/${bundleKey(bundle.sha256)}`, '--endpoint-url', moto!.url], { env: awsEnv });
    }
    const stateDir = path.join(root, 'instance', 'state');
    const config: AgentConfig = {
      run: 'bench',
      generation: 1,
      attempt: 1,
      resuming: false,
      storage,
      bundleKey: bundleKey(bundle.sha256),
      stateDir,
      workDir: path.join(root, 'instance', 'work'),
      checkpointDir: path.join(root, 'instance', 'checkpoints'),
      command: 'python3 job.py',
      env: { BENCH_CTL: ctl, BENCH_SHARD_BYTES: String(SHARD_MIB * MIB), BENCH_SAVES: String(SAVES) },
      secrets: {},
      syncIntervalSeconds: 0.5,
      keep: AGENT_KEEP,
      signal: 'SIGTERM',
      signalScope: 'main',
      gracePeriodSeconds: 30,
      imdsUrl: 'http://127.0.0.1:9',
      heartbeatSeconds: backend === 's3' ? 10 : 2,
      noticePollSeconds: 5,
      // One agent writes this run: no concurrent sync to protect, so retention frees contents at once.
      contentGraceSeconds: 0,
      ...(backend === 's3' ? { s3EndpointUrl: proxy!.url, region: 'us-east-1' } : {}),
    };
    const configFile = path.join(root, 'config.json');
    writeFileSync(configFile, JSON.stringify(config));
    const child: ChildProcess = spawn('python3', [agentPath, '--config', configFile], { env: awsEnv, stdio: 'ignore' });
    const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));

    let peak = 0;
    const skipSmall = (name: string) => /\.(log|json|out|cursor|lock|pid|pgid)$/.test(name) || name === 'store-ops';
    const sampler = setInterval(() => {
      peak = Math.max(peak, dirBytes(stateDir, skipSmall));
    }, 20);

    const manifestsDir = path.join(storageDir, checkpointsPrefix('bench', 1));
    const newestManifest = (): { files: { path: string; size: number }[] } | undefined => {
      if (backend === 'file') {
        const ids = existsSync(manifestsDir) ? readdirSync(manifestsDir).filter((id) => existsSync(path.join(manifestsDir, id, 'MANIFEST.json'))).sort() : [];
        const id = ids.at(-1);
        if (!id) return undefined;
        try {
          return JSON.parse(readFileSync(path.join(manifestsDir, id, 'MANIFEST.json'), 'utf8'));
        } catch {
          return undefined;
        }
      }
      return undefined;
    };
    const s3Newest = async (): Promise<{ files: { path: string; size: number }[] } | undefined> => {
      const list = await fetch(`${moto!.url}/${BUCKET}?list-type=2&prefix=${encodeURIComponent(`${prefix}/${checkpointsPrefix('bench', 1)}`)}`, {
        headers: { authorization: 'AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0' },
      }).then((r) => r.text());
      const keys = [...list.matchAll(/<Key>([^<]+)<\/Key>/g)].map((m) => m[1] as string).filter((k) => k.endsWith('/MANIFEST.json')).sort();
      const key = keys.at(-1);
      if (!key) return undefined;
      const res = await fetch(`${moto!.url}/${BUCKET}/${key}`, {
        headers: { authorization: 'AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0' },
      });
      return res.ok ? ((await res.json()) as { files: { path: string; size: number }[] }) : undefined;
    };

    const saveToSafe: number[] = [];
    const plainCopy: number[] = [];
    for (let n = 1; n <= SAVES; n++) {
      writeFileSync(path.join(ctl, `go-${n}`), '');
      const savedFile = path.join(ctl, `saved-${n}`);
      while (!existsSync(savedFile)) await sleep(20);
      const savedAt = Number(readFileSync(savedFile, 'utf8')) * 1000;
      const want = `checkpoint-${n * 100}/model-${String(SHARDS).padStart(5, '0')}-of-${String(SHARDS).padStart(5, '0')}.safetensors`;
      const trainerState = `checkpoint-${n * 100}/trainer_state.json`;
      for (;;) {
        const m = backend === 'file' ? newestManifest() : await s3Newest();
        if (m && m.files.some((f) => f.path === want && f.size === SHARD_MIB * MIB) && m.files.some((f) => f.path === trainerState)) break;
        await sleep(backend === 'file' ? 5 : 50); // the poll's delay counts against the agent: keep it small where a save takes 0.1 s
      }
      saveToSafe.push((Date.now() - savedAt) / 1000);
      // The same new files, copied plainly to the same storage, right after.
      const src = path.join(config.checkpointDir, `checkpoint-${n * 100}`);
      const t0 = Date.now();
      if (backend === 'file') {
        execFileSync('cp', ['-r', src, path.join(storageDir, `plain-${n}`)]);
      } else {
        execFileSync('aws', ['s3', 'cp', '--only-show-errors', '--recursive', src, `s3://${BUCKET}/plain-${prefix}/${n}/`, '--endpoint-url', moto!.url], { env: awsEnv });
      }
      plainCopy.push((Date.now() - t0) / 1000);
      if (backend === 'file') rmSync(path.join(storageDir, `plain-${n}`), { recursive: true, force: true });
      else spawnSync('aws', ['s3', 'rm', '--only-show-errors', '--recursive', `s3://${BUCKET}/plain-${prefix}/${n}/`, '--endpoint-url', moto!.url], { env: awsEnv });
    }
    await exited;
    clearInterval(sampler);

    const agentLog = readFileSync(path.join(stateDir, 'agent.log'), 'utf8');
    if (process.env.BENCH_AGENT_LOG) writeFileSync(`${process.env.BENCH_AGENT_LOG}-${backend}-${agent}.log`, agentLog);
    let bytesWritten: number;
    if (backend === 's3') {
      bytesWritten = proxy!.written();
    } else if (agent === 'new') {
      const m = [...agentLog.matchAll(/storage writes by this agent so far: (\d+) bytes/g)].at(-1);
      bytesWritten = Number(m?.[1] ?? NaN);
    } else {
      bytesWritten = [...agentLog.matchAll(/published checkpoint \d+ \(\d+ files, (\d+) bytes/g)].reduce((sum, m) => sum + Number(m[1]), 0);
    }
    const smallFiles = SAVES * Buffer.byteLength('{"model_type": "gpt2", "n_layer": 12}') + SAVES * 24;
    const storedAtEnd = backend === 'file' ? dirBytes(path.join(storageDir, 'runs'), () => false) : undefined;
    return {
      backend,
      shardMiB: SHARD_MIB,
      saves: SAVES,
      agent,
      bytesWritten,
      newBytes: SAVES * SHARDS * SHARD_MIB * MIB + smallFiles,
      peakExtraDisk: peak,
      largestNewFile: SHARD_MIB * MIB,
      saveToSafe,
      plainCopy,
      ...(storedAtEnd !== undefined ? { storedAtEnd } : {}),
    };
  } finally {
    await proxy?.close();
    rmSync(root, { recursive: true, force: true });
  }
}

const fmtMiB = (b: number) => `${(b / MIB).toFixed(0)} MiB`;
const fmtS = (s: number) => `${s.toFixed(2)} s`;

async function main(): Promise<void> {
  const scratch = mkdtempSync(path.join(os.tmpdir(), 'runctl-bench-agents-'));
  const agents = { today: todayAgent(scratch), new: newAgent() };
  const results: Figures[] = [];
  let moto: MotoServer | undefined;
  try {
    for (const backend of BACKENDS) {
      if (backend === 's3') {
        moto = await startMoto({ startTimeoutMs: 180_000 });
        await createBucket(moto.url, BUCKET);
      }
      for (const agent of ['today', 'new'] as const) {
        process.stdout.write(`${backend} ${agent}: ${SIZES[backend].saves} saves of ${SHARDS} × ${SIZES[backend].shardMiB} MiB ...\n`);
        const f = await runOne(backend, agent, agents[agent], backend === 's3' ? moto : undefined);
        results.push(f);
        process.stdout.write(
          `  written/new ${(f.bytesWritten / f.newBytes).toFixed(2)}, extra disk ${fmtMiB(f.peakExtraDisk)}, save→safe median ${fmtS(median(f.saveToSafe))}, plain copy median ${fmtS(median(f.plainCopy))}\n` +
            `  save→safe each: ${f.saveToSafe.map((s) => s.toFixed(3)).join(' ')}; plain copy each: ${f.plainCopy.map((s) => s.toFixed(3)).join(' ')}\n`,
        );
      }
    }
  } finally {
    await moto?.stop();
    rmSync(scratch, { recursive: true, force: true });
  }

  const kept = ((existsSync(DOC) ? readFileSync(DOC, 'utf8') : '').match(/<!-- bench:checkpoint-scale:begin -->[\s\S]*<!-- bench:checkpoint-scale:end -->/)?.[0] ?? '')
    .split('\n')
    .filter((line) => (!BACKENDS.includes('file') && line.startsWith('| file:// |')) || (!BACKENDS.includes('s3') && line.startsWith('| s3:// (moto) |')));
  const measured = results.map((f) => {
    const ratio = median(f.saveToSafe) / median(f.plainCopy);
    return `| ${f.backend === 'file' ? 'file://' : 's3:// (moto)'} | ${f.saves} × ${SHARDS} × ${f.shardMiB} MiB | ${f.agent === 'today' ? 'today (before)' : 'content-addressed'} | ${(f.bytesWritten / f.newBytes).toFixed(2)} (${fmtMiB(f.bytesWritten)} / ${fmtMiB(f.newBytes)}) | ${fmtMiB(f.peakExtraDisk)} | ${fmtS(median(f.saveToSafe))} | ${fmtS(median(f.plainCopy))} | ${ratio.toFixed(2)}× |`;
  });
  const rows = BACKENDS[0] === 's3' ? [...kept, ...measured] : [...measured, ...kept];
  const load = os.loadavg()[0]!.toFixed(1);
  const section = [
    '<!-- bench:checkpoint-scale:begin -->',
    '## Checkpoint storage at scale (issue 9)',
    '',
    `A Hugging Face Trainer-style job saves \`checkpoint-<step>/\` (${SHARDS} shards plus two small JSON files) again and again,`,
    `keeping its newest ${JOB_KEEPS} folders, under the real agent (\`keep: ${AGENT_KEEP}\`, \`syncInterval: 0.5s\`). Targets:`,
    'bytes written to storage ÷ bytes of new checkpoint content ≤ 1.1; extra disk on the instance ≤ the largest new file',
    '(one shard); save → safe ≤ 1.5 × a plain copy of the same new files, measured side by side in one run.',
    '',
    '| storage | saves × shards | agent | written ÷ new | peak extra disk | save → safe (median) | plain copy (median) | ratio |',
    '|---|---|---|---:|---:|---:|---:|---:|',
    ...rows,
    '',
    'Command: `npm run bench -- checkpoint-scale` (`BENCH_SAVES`/`BENCH_SHARD_MIB` for file://, `BENCH_S3_SAVES`/`BENCH_S3_SHARD_MIB`',
    'for S3 change the sizes; `BENCH_BACKENDS=file` or `s3` measures one backend again and keeps the other\'s rows). "today (before)" is the agent just before checkpoints went through the content-addressed',
    'store (a staging copy of the whole folder, then one recursive upload of it), built from git by the bench.',
    'The job prints `RUNCTL_CHECKPOINT_SAVED` after each save, so both agents sync at once. Save → safe runs from the',
    'moment the job has written its last file to a published manifest naming the new shards (storage polled every',
    '5 ms on file://, 50 ms on S3). The plain copy is `cp -r checkpoint-<step> <storage>/` or `aws s3 cp --recursive checkpoint-<step> s3://…`',
    'to the same storage right after. Bytes written: on S3, request bodies counted by a proxy in front of moto; on',
    "file://, the agent's own count (content-addressed: its store's byte counter, copies of rejected files included;",
    "today: the sizes of the checkpoints it published, which its `put_tree` copied in full). Peak extra disk: the agent's",
    'state folder sampled every 20 ms (a staging copy; links to the job\'s own files take no space and are not',
    'counted). The content-addressed agent copies new files straight into the store on file:// (0 extra), and on S3',
    'uploads a sync\'s new contents with one `aws s3 cp --recursive` of a folder of symbolic links to them (0 extra).',
    'Once the job has declared a save, it stores each shard of the next one as the job closes it (docs/checkpoints.md,',
    '"A declared save is stored while it is written"), on a thread of its own, so the declaration costs the last shard and the manifest.',
    'The console output lists every save\'s figures; `BENCH_AGENT_LOG=<prefix>` keeps each agent\'s log.',
    '',
    `Measured ${new Date().toISOString().slice(0, 10)} on ${os.cpus().length} × ${os.cpus()[0]?.model.trim() ?? 'CPU'}, Node ${process.version}, load average ${load} when it finished`,
    '(the machine was shared with other work, so absolute times are rough; the ratios are the figures).',
    '<!-- bench:checkpoint-scale:end -->',
  ].join('\n');
  const current = existsSync(DOC) ? readFileSync(DOC, 'utf8') : '# Benchmarks\n';
  const marked = /<!-- bench:checkpoint-scale:begin -->[\s\S]*<!-- bench:checkpoint-scale:end -->/;
  writeFileSync(DOC, marked.test(current) ? current.replace(marked, () => section) : `${current.trimEnd()}\n\n${section}\n`);
  process.stdout.write(`${section}\n`);
}

await main();
