"""Whom the notice signal reaches (jobsignal.py, issue 9 and break9's pipeline-tee-signal-kills-save):
the job runs under the real wrapper, and the signal is sent as the agent sends it."""
import os
import signal
import sys
import tempfile
import time
import unittest

from runctl_agent.jobsignal import group_tree, main_processes, send
from runctl_agent.processes import spawn_wrapped

# A trainer-shaped job: prints every 50 ms; on SIGTERM it finishes the step, "saves" (prints the
# declaration), and exits 0. A print into a pipe whose reader died raises BrokenPipeError.
TRAINER = (
    "import signal, sys, time\n"
    "stop = []\n"
    "signal.signal(signal.SIGTERM, lambda *a: stop.append(1))\n"
    "step = 0\n"
    "while True:\n"
    "    step += 1\n"
    "    print('step=%d' % step, flush=True)\n"
    "    time.sleep(0.05)\n"
    "    if stop:\n"
    "        time.sleep(0.3)\n"
    "        print('RUNCTL_CHECKPOINT_SAVED step=%d' % step, flush=True)\n"
    "        sys.exit(0)\n"
)


def wait_for(what, predicate, timeout=60):
    """Polls for a state (never a fixed sleep); fails with `what` after a generous timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("timed out waiting for " + what)


class MainProcessesTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        with open(os.path.join(self.tmp.name, "trainer.py"), "w") as f:
            f.write(TRAINER)
        self.children = []

    def tearDown(self):
        for popen in self.children:
            try:
                os.killpg(popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            popen.wait()
        self.tmp.cleanup()

    def start(self, command, expect):
        """Start command under the wrapper; wait until the group holds every comm in `expect` and
        the trainer printed (its output pipe is in place); returns (popen, {comm: [pids]})."""
        p = lambda n: os.path.join(self.tmp.name, n)
        popen = spawn_wrapped("job", command, self.tmp.name, dict(os.environ, PYTHON=sys.executable), p("job.log"), p("job.exit"), p("job.pid"))
        self.children.append(popen)

        def ready():
            comms = {}
            for pid, (comm, _ppid) in group_tree(popen.pid).items():
                comms.setdefault(comm, []).append(pid)
            if not all(c in comms for c in expect):
                return None
            if "tee" in expect and "step=" not in self.read("out.log"):
                return None
            if "tee" not in expect and "step=" not in self.read("job.log"):
                return None
            return comms
        return popen, wait_for("the job's processes %s" % (expect,), ready)

    def read(self, name):
        try:
            with open(os.path.join(self.tmp.name, name)) as f:
                return f.read()
        except OSError:
            return ""

    def trainer_pid(self, comms):
        pids = [pid for comm, ps in comms.items() if comm.startswith("python") for pid in ps]
        self.assertEqual(len(pids), 1, comms)
        return pids[0]

    def test_shapes_signal_the_trainer_only(self):
        shapes = [
            ("a direct command", '"$PYTHON" trainer.py', ["python3"]),
            ("a multi-line shell script", 'cd .\necho starting\n"$PYTHON" trainer.py\necho "exited $?"', ["python3"]),
            ("a pipeline into tee", '"$PYTHON" trainer.py 2>&1 | tee out.log', ["python3", "tee"]),
            ("a pipeline through grep into tee", '"$PYTHON" -u trainer.py 2>&1 | grep --line-buffered -v DEBUG | tee out.log', ["python3", "grep", "tee"]),
            ("a subshell into tee", '(cd . && "$PYTHON" trainer.py) | tee out.log', ["python3", "tee"]),
        ]
        for shape, command, expect in shapes:
            with self.subTest(shape):
                expect = [os.path.basename(sys.executable)[:15] if c == "python3" else c for c in expect]
                popen, comms = self.start(command, expect)
                self.assertEqual(main_processes(popen.pid), [self.trainer_pid(comms)])
                os.killpg(popen.pid, signal.SIGKILL)
                popen.wait()
                for name in ("out.log", "job.log"):
                    try:
                        os.unlink(os.path.join(self.tmp.name, name))
                    except OSError:
                        pass

    def test_a_pipeline_into_tee_keeps_tee_while_the_trainer_saves(self):
        popen, comms = self.start('"$PYTHON" trainer.py 2>&1 | tee out.log', [os.path.basename(sys.executable)[:15], "tee"])
        sent = send(popen.pid, signal.SIGTERM, "main", lambda m: None)
        self.assertEqual(sent, "sent SIGTERM to the job's main process %d" % self.trainer_pid(comms))
        self.assertEqual(popen.wait(), 0)
        self.assertRegex(self.read("out.log"), r"RUNCTL_CHECKPOINT_SAVED step=\d+\n$")
        self.assertNotIn("Broken pipe", self.read("job.log"))


if __name__ == "__main__":
    unittest.main()
