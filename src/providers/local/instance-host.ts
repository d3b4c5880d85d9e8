// The instance host: the process that *is* a local instance. Started detached by the local
// provider (`node instance-host.js <sandboxDir>`), in its own process group, it
//  - serves the sandbox's IMDSv2-compatible endpoint on 127.0.0.1 (an ephemeral port) and
//    announces it in host.json;
//  - enforces a delivered spot notice like EC2 does: when the notice's time has come it stops
//    every process of the sandbox, marks the sandbox terminated with the spot reason, and exits;
//  - shuts the sandbox down if its folder disappears, so no process outlives its sandbox;
//  - otherwise stays alive until it is terminated (SIGTERM: exit at once; terminate() itself
//    stops the sandbox's other processes).
import { promises as fs } from 'node:fs';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeJsonAtomic } from './fs-util.js';
import { createImdsServer } from './imds-server.js';
import { processStartTime } from './processes.js';
import { SPOT_TERMINATION_REASON, Sandbox, type NoticeRecord } from './sandbox.js';
import { shutDownSandbox, stopSandboxProcesses } from './shutdown.js';

const WATCH_INTERVAL_MS = 200;
/** What the processes left at the notice's deadline get between SIGTERM and SIGKILL. */
const SPOT_SHUTDOWN_GRACE_MS = 2000;

function log(message: string): void {
  process.stdout.write(`${new Date().toISOString()} [instance-host ${process.pid}] ${message}\n`);
}

export async function runInstanceHost(sandboxDir: string): Promise<void> {
  const sandbox = new Sandbox(path.resolve(sandboxDir), path.basename(path.resolve(sandboxDir)));
  const instance = await sandbox.instance();
  if (!instance) throw new Error(`${sandbox.instanceFile} is missing: not a runctl sandbox`);

  const server = createImdsServer({
    instanceId: sandbox.id,
    lifecycle: instance.market === 'spot' ? 'spot' : 'on-demand',
    noticeFile: sandbox.noticeFile,
    rebalanceFile: sandbox.rebalanceFile,
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  await writeJsonAtomic(sandbox.hostFile, {
    pid: process.pid,
    startTime: processStartTime(process.pid),
    port,
    imdsUrl: `http://127.0.0.1:${port}`,
    startedAt: new Date().toISOString(),
  });
  log(`instance ${sandbox.id} up; IMDS on http://127.0.0.1:${port}`);

  let ending = false;
  const exit = (code: number): void => {
    ending = true;
    server.close();
    process.exit(code);
  };
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
    process.on(signal, () => {
      log(`received ${signal}; instance host exiting`);
      exit(0);
    });
  }

  const shutDown = async (why: string, record: Parameters<typeof shutDownSandbox>[2]): Promise<void> => {
    if (ending) return;
    ending = true;
    log(`${why}: stopping every process of the sandbox`);
    try {
      const { survivors } = await shutDownSandbox(sandbox, 'host', record, { graceMs: SPOT_SHUTDOWN_GRACE_MS, exclude: [process.pid] });
      if (survivors.length > 0) log(`processes ${survivors.join(', ')} survived SIGKILL`);
      log('instance terminated');
    } catch (err) {
      // Never stay up half shut down: exit, and observe() finds the host dead and finishes the job.
      log(`shutting down failed: ${err instanceof Error ? err.message : String(err)}`);
    }
    exit(0);
  };

  let notice: NoticeRecord | undefined;
  const watch = async (): Promise<void> => {
    if (ending) return;
    try {
      await fs.access(sandbox.tagsFile);
    } catch {
      // The sandbox was deleted under us (e.g. rm -rf .runctl): nothing may keep running for it,
      // as on a lost instance. There is no folder left to record anything in (shutDownSandbox
      // would fail writing its marks and leave this host running forever), so the processes are
      // found by their instance marker, stopped, and the host exits whatever happens.
      ending = true;
      log('sandbox folder removed: stopping every process of the sandbox');
      try {
        const survivors = await stopSandboxProcesses(sandbox, { graceMs: SPOT_SHUTDOWN_GRACE_MS, exclude: [process.pid] });
        if (survivors.length > 0) log(`processes ${survivors.join(', ')} survived SIGKILL`);
      } catch (err) {
        log(`stopping the sandbox's processes failed: ${err instanceof Error ? err.message : String(err)}`);
      }
      log('instance gone with its folder');
      exit(0);
      return;
    }
    if (await sandbox.terminated()) return exit(0);
    notice ??= await sandbox.notice();
    if (notice && Date.parse(notice.time) <= Date.now()) {
      await shutDown(`spot notice time ${notice.time} reached`, {
        at: new Date().toISOString(),
        stateReason: `${SPOT_TERMINATION_REASON}: Spot instance termination`,
        spotInterruption: { noticedAt: notice.noticedAt, reason: SPOT_TERMINATION_REASON },
      });
    }
  };
  const timer = setInterval(() => {
    watch().catch((err: unknown) => log(`watch failed: ${err instanceof Error ? err.message : String(err)}`));
  }, WATCH_INTERVAL_MS);
  timer.unref();
}

const entry = process.argv[1] ? path.resolve(process.argv[1]) : '';
if (entry === fileURLToPath(import.meta.url)) {
  const dir = process.argv[2];
  if (!dir) {
    process.stderr.write('usage: instance-host.js <sandboxDir>\n');
    process.exit(2);
  }
  runInstanceHost(dir).catch((err: unknown) => {
    log(`failed to start: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  });
}
