import os
import signal
import subprocess
import tempfile
import time
import unittest

from runctl_agent.processes import group_alive, process_alive, process_start_time, spawn_wrapped


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
