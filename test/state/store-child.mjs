// A second process using the file store, for lock and crash tests. Uses the built dist/ (the
// test suite's global setup rebuilds it). Usage: node store-child.mjs <root> <mode>
//   hold        open, report, then keep the lock until stdin closes
//   race        report {ready}, wait for a line on stdin (so several children start together),
//               then behave like hold
//   write-loop  open, then rewrite one run's status forever (killed by the test mid-write)
import { createInterface } from 'node:readline';
import { FileStore } from '../../dist/state/file-store.js';

const [root, mode] = process.argv.slice(2);
// write-loop skips fsync: more writes per second, so more chances for the kill to land mid-write.
const store = new FileStore(root, { command: `store-child ${mode}`, fsync: mode !== 'write-loop' });
const report = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);
const stdinLines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

if (mode === 'race') {
  report({ ready: true });
  await stdinLines.next();
}

try {
  const opened = await store.open();
  report({ ok: true, pid: process.pid, note: opened.note });
} catch (err) {
  report({ ok: false, name: err.name, message: err.message, holder: err.holder });
  process.exit(0);
}

if (mode === 'hold' || mode === 'race') {
  while (!(await stdinLines.next()).done);
  await store.close();
  process.exit(0);
} else if (mode === 'write-loop') {
  // The shape runctl writes (readers check it), plus the fields the test looks at.
  const at = '2026-01-01T12:00:00.000Z';
  const crashyStatus = {
    run: 'crashy',
    uid: '0b6f1c2d-4a5b-4c6d-8e7f-901a2b3c4d5e',
    phase: 'Training',
    generation: 1,
    specHash: 'abc',
    observedGeneration: 1,
    attempt: 1,
    interruptions: 0,
    errorRetries: 0,
    conditions: [],
    instances: [],
    deadlines: {},
    snapshot: { value: 'Training', context: { run: 'crashy', generation: 1, attempt: 1, limits: {} } },
    spec: { provider: 'local', run: 'true', code: {}, resources: {}, checkpoints: {}, recovery: {}, timeouts: {} },
    createdAt: at,
    updatedAt: at,
    eventSeq: 0,
    costUSD: 0,
  };
  const big = 'x'.repeat(4 * 1024 * 1024); // large enough that a kill often lands mid-write
  for (let n = 1; ; n++) {
    await store.putStatus({ ...crashyStatus, counter: n, padding: big });
    if (n === 5) report({ wrote: n });
  }
}
