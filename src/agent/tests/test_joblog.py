import os
import tempfile
import unittest

from runctl_agent.joblog import JobLog
from runctl_agent.storage import FileStorage


class JobLogTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.state = os.path.join(self.tmp.name, "state")
        os.makedirs(self.state)
        self.storage = FileStorage("file://" + os.path.join(self.tmp.name, "store"))
        self.logged = []
        self.log = JobLog(self.state, self.storage, "runs/r/g1/a1/", lambda b: b.replace(b"hunter2", b"***"), self.logged.append)

    def tearDown(self):
        self.tmp.cleanup()

    def write(self, text):
        with open(self.log.path, "a") as f:
            f.write(text)

    def test_view_has_the_redacted_tail_without_agent_notes(self):
        self.write("step=1/10 loss=2\n")
        self.log.note("phase training")
        self.write("step=2/10 loss=1 token=hunter2\n")
        view = self.log.view(0)
        self.assertEqual(view, {"logTail": ["step=1/10 loss=2", "step=2/10 loss=1 token=***"]})

    def test_ship_sends_whole_lines_then_the_rest_when_final_and_continues_after_restart(self):
        self.write("a\nb\npartial")
        self.log.ship()
        self.assertEqual(self.storage.list_keys("runs/r/g1/a1/logs/"), ["00000001.log"])
        self.assertEqual(self.storage.get_bytes("runs/r/g1/a1/logs/00000001.log"), b"a\nb\n")
        again = JobLog(self.state, self.storage, "runs/r/g1/a1/", lambda b: b, self.logged.append)
        again.ship(final=True)
        self.assertEqual(self.storage.get_bytes("runs/r/g1/a1/logs/00000002.log"), b"partial")


if __name__ == "__main__":
    unittest.main()
