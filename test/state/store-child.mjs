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
  const big = 'x'.repeat(4 * 1024 * 1024); // large enough that a kill often lands mid-write
  for (let n = 1; ; n++) {
    await store.putStatus({ run: 'crashy', phase: 'Training', counter: n, padding: big });
    if (n === 5) report({ wrote: n });
  }
}
