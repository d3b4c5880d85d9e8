import os
import signal
import subprocess
import tempfile
import time
import unittest

from runctl_agent.processes import JobProcesses, group_alive, process_alive, process_start_time, spawn_wrapped


class ProcessesTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.p = lambda n: os.path.join(self.tmp.name, n)

    def tearDown(self):
        self.tmp.cleanup()

    def test_wrapper_records_pid_and_exit_code_and_leads_its_group(self):
        popen = spawn_wrapped("job", "echo hello; exit 7", self.tmp.name, dict(os.environ), self.p("job.log"), self.p("job.exit"), self.p("job.pid"))
        self.assertEqual(popen.wait(), 7)
        with open(self.p("job.exit")) as f:
            self.assertEqual(f.read().strip(), "7")
        with open(self.p("job.pid")) as f:
            self.assertEqual(int(f.read()), popen.pid)
        with open(self.p("job.log")) as f:
            self.assertEqual(f.read(), "hello\n")

    def test_liveness_checks_start_time_against_pid_reuse(self):
        popen = spawn_wrapped("job", "sleep 30", self.tmp.name, dict(os.environ), self.p("job.log"), self.p("job.exit"), self.p("job.pid"))
        try:
            start = process_start_time(popen.pid)
            self.assertTrue(process_alive(popen.pid, start))
            if start is not None:
                self.assertFalse(process_alive(popen.pid, str(int(start) + 1)))
            self.assertTrue(group_alive(popen.pid))
        finally:
            os.killpg(popen.pid, signal.SIGKILL)
            popen.wait()
        self.assertFalse(process_alive(popen.pid))


if __name__ == "__main__":
    unittest.main()


# A launcher shaped like torchrun's: the worker gets a session of its own and writes its pid.
LAUNCHER = (
    "import subprocess, sys\n"
    "w = subprocess.Popen([sys.executable, '-c', 'import os, time; print(os.getpid(), flush=True); time.sleep(60)'],"
    " start_new_session=True, stdout=open(sys.argv[1], 'w'))\n"
    "sys.exit(w.wait())\n"
)


def parent_of(pid):
    with open("/proc/%d/stat" % pid) as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


class JobProcessesTest(unittest.TestCase):
    """The job's processes are its session plus every descendant, remembered once found (break
    test 20, F1 and F2: torchrun's workers run in sessions of their own)."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.p = lambda n: os.path.join(self.tmp.name, n)
        self.popen = None
        self.worker = None

    def tearDown(self):
        for kill in (lambda: os.kill(self.worker, signal.SIGKILL), lambda: os.killpg(self.popen.pid, signal.SIGKILL)):
            try:
                kill()
            except (ProcessLookupError, TypeError):
                pass
        if self.popen is not None:
            self.popen.wait()
        self.tmp.cleanup()

    def start(self):
        """Starts the job (launcher, then a sleep) and returns the worker's pid once it runs."""
        with open(self.p("launch.py"), "w") as f:
            f.write(LAUNCHER)
        self.popen = spawn_wrapped("job", "python3 launch.py worker.pid; sleep 60", self.tmp.name, dict(os.environ),
                                   self.p("job.log"), self.p("job.exit"), self.p("job.pid"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with open(self.p("worker.pid"), "a+") as f:
                f.seek(0)
                text = f.read().strip()
            if text:
                self.worker = int(text)
                return self.worker
            time.sleep(0.02)
        self.fail("the worker never started")

    def test_a_worker_in_a_session_of_its_own_is_found_and_killed_with_the_job(self):
        worker = self.start()
        self.assertNotEqual(os.getsid(worker), self.popen.pid)  # outside the job's session and group
        procs = JobProcesses()
        self.assertIn(worker, procs.pids(self.popen.pid))
        self.assertEqual(procs.signal(self.popen.pid, signal.SIGKILL), [worker])
        self.popen.wait()
        deadline = time.monotonic() + 30
        while procs.alive(self.popen.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertFalse(procs.alive(self.popen.pid))
        self.assertFalse(process_alive(worker))

    def test_a_worker_whose_launcher_died_is_still_the_jobs_once_found(self):
        worker = self.start()
        procs = JobProcesses()
        self.assertIn(worker, procs.pids(self.popen.pid))
        launcher = parent_of(worker)
        os.kill(launcher, signal.SIGKILL)  # the worker is reparented, out of the job's tree
        deadline = time.monotonic() + 30
        while parent_of(worker) == launcher and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertNotEqual(parent_of(worker), launcher)
        self.assertIn(worker, procs.pids(self.popen.pid))
        self.assertNotIn(worker, JobProcesses().pids(self.popen.pid))  # a first look cannot know it
