// A reader that goes away (`runctl logs RUN | head -1`) closes our stdout: the next write fails
// with EPIPE. That is the reader's choice, not an error: end quietly, like `cat` under a pipe,
// with the exit code the command had set (0 unless it had found a problem to report).

let installed = false;

/** Makes EPIPE on stdout or stderr end the process quietly instead of with a stack trace. Idempotent. */
export function quietOnClosedOutput(): void {
  if (installed) return;
  installed = true;
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EPIPE') process.exit(typeof process.exitCode === 'number' ? process.exitCode : 0);
      throw err;
    });
  }
}
