"""Whom the notice signal reaches (jobsignal.py, issue 9, break9's pipeline-tee-signal-kills-save and
brk20 F3, a script that traps the signal): the job runs under the real wrapper, and the signal is
sent as the agent sends it."""
import os
import signal
import sys
import tempfile
import time
import unittest

from runctl_agent.jobsignal import group_tree, ignores_int_and_quit, main_processes, send
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


class JobCase(unittest.TestCase):
    """Runs a job under the real wrapper in a temporary directory holding trainer.py."""

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


class MainProcessesTest(JobCase):
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



# A script that traps the stop signal for its own cleanup (brk20 F3, the user's script): bash runs
# the trap only once its foreground command exits, so the trainer in the foreground must be
# signalled too, or it never hears of the notice.
TRAP_CLEANUP = (
    'tmp=$(mktemp -d)\n'
    'cleanup() { rm -rf "$tmp"; echo "cleaned up"; }\n'
    'trap cleanup EXIT INT TERM\n'
    'echo "starting the trainer"\n'
    '"$PYTHON" trainer.py\n'
    'echo "trainer exited $?"\n'
)
# A script that forwards the signal to a trainer it started in the background: its trap runs at
# once (`wait` is interrupted) and signals the trainer, which must not get it a second time.
FORWARDING = (
    'trap \'kill -TERM "$pid"; wait "$pid"\' TERM\n'
    '"$PYTHON" trainer.py &\n'
    'pid=$!\n'
    'wait "$pid"\n'
    'echo "trainer exited $?"\n'
)


class TrappingShellTest(JobCase):
    """A shell that traps the signal is a main process and is looked through into its foreground
    commands, not its background ones (those ignore SIGINT and SIGQUIT, POSIX XCU 2.11)."""

    @classmethod
    def setUpClass(cls):
        # As the agent does (__main__.install_signal_handlers): the job starts with default
        # dispositions even when these tests were started with SIGINT/SIGQUIT ignored (`cmd &`).
        cls.saved = [(s, signal.getsignal(s)) for s in (signal.SIGINT, signal.SIGQUIT)]
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGQUIT, signal.SIG_DFL)

    @classmethod
    def tearDownClass(cls):
        for s, handler in cls.saved:
            signal.signal(s, handler)

    def start_script(self, script):
        """Run script as `bash job.sh`; returns (popen, comms, the job.sh shell's pid, the trainer's)."""
        with open(os.path.join(self.tmp.name, "job.sh"), "w") as f:
            f.write(script)
        popen, comms = self.start("bash job.sh", ["bash", os.path.basename(sys.executable)[:15]])
        trainer = self.trainer_pid(comms)
        tree = group_tree(popen.pid)
        shells = [pid for pid in comms["bash"] if pid != popen.pid and tree[pid][1] == popen.pid]
        self.assertEqual(len(shells), 1, comms)
        return popen, comms, shells[0], trainer

    def test_trap_cleanup_with_the_trainer_in_the_foreground_signals_the_shell_and_the_trainer(self):
        popen, _comms, shell, trainer = self.start_script(TRAP_CLEANUP)
        self.assertFalse(ignores_int_and_quit(trainer))
        self.assertEqual(main_processes(popen.pid), sorted([shell, trainer]))
        sent = send(popen.pid, signal.SIGTERM, "main", lambda m: None)
        self.assertEqual(sent, "sent SIGTERM to the job's main processes %s" % ", ".join(str(p) for p in sorted([shell, trainer])))
        self.assertEqual(popen.wait(), 0)
        log = self.read("job.log")
        # The trainer saved, then bash ran the deferred TERM trap, then the rest of the script.
        self.assertRegex(log, r"RUNCTL_CHECKPOINT_SAVED step=\d+\ncleaned up\ntrainer exited 0\n")

    def test_the_forwarding_pattern_signals_the_shell_only(self):
        popen, _comms, shell, trainer = self.start_script(FORWARDING)
        self.assertTrue(ignores_int_and_quit(trainer))  # the mark of `cmd &` (XCU 2.11)
        self.assertEqual(main_processes(popen.pid), [shell])
        sent = send(popen.pid, signal.SIGTERM, "main", lambda m: None)
        self.assertEqual(sent, "sent SIGTERM to the job's main process %d" % shell)
        self.assertEqual(popen.wait(), 0)
        self.assertRegex(self.read("job.log"), r"RUNCTL_CHECKPOINT_SAVED step=\d+\n")

    def test_without_the_trap_the_trainer_only(self):
        popen, _comms, _shell, trainer = self.start_script(TRAP_CLEANUP.replace("trap cleanup EXIT INT TERM\n", ""))
        self.assertEqual(main_processes(popen.pid), [trainer])

    def test_a_non_trapping_shell_in_the_foreground_of_a_trapping_one_is_looked_through(self):
        popen, _comms, shell, trainer = self.start_script('trap "echo trapped" TERM\nbash -c \'"$PYTHON" trainer.py; echo "inner done"\'\necho "outer done"\n')
        self.assertNotEqual(group_tree(popen.pid)[trainer][1], shell)  # the inner bash is between
        self.assertEqual(main_processes(popen.pid), sorted([shell, trainer]))

    def test_a_trapping_script_started_in_the_background_signals_its_children(self):
        # Started with `&` by another script, the trapping shell ignores SIGINT and SIGQUIT, and so
        # does every child it starts: foreground and background look alike there, and its children
        # are signalled rather than left waiting for a trap bash runs only after they exit.
        with open(os.path.join(self.tmp.name, "inner.sh"), "w") as f:
            f.write(TRAP_CLEANUP)
        popen, _comms, _outer, trainer = self.start_script("bash inner.sh &\nwait\n")
        inner = group_tree(popen.pid)[trainer][1]
        self.assertTrue(ignores_int_and_quit(inner))
        self.assertEqual(main_processes(popen.pid), sorted([inner, trainer]))


if __name__ == "__main__":
    unittest.main()
