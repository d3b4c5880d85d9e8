"""CheckpointSyncStalled's clock (checkpoints.py): it starts when the job starts, so the time a
restore (or the setup) takes is never "nothing published" (break9:
many-small-files-slow-restore-false-stall). Real storage, restore and syncs; only the clock the
stall rule reads is driven by the test."""
import os
import tempfile
import time as real_time
import unittest
from unittest import mock

from runctl_agent import checkpoints as checkpoints_module
from runctl_agent.checkpoints import Checkpoints
from runctl_agent.faults import Faults
from runctl_agent.storage import FileStorage


class Clock(object):
    def __init__(self, now):
        self.now = now

    def time(self):
        return self.now

    def monotonic(self):
        return real_time.monotonic()

    def sleep(self, seconds):
        real_time.sleep(seconds)


class StallClockTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.root = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def checkpoints(self, attempt, resuming, faults=None):
        ckpt = os.path.join(self.root, "ckpt%d" % attempt)
        state = os.path.join(self.root, "state%d" % attempt)
        os.makedirs(ckpt, exist_ok=True)
        os.makedirs(state, exist_ok=True)
        url = "file://" + os.path.join(self.root, "storage")
        cfg = {"checkpointDir": ckpt, "syncIntervalSeconds": 1, "storage": url, "run": "stall", "generation": 1,
               "attempt": attempt, "keep": 3, "resuming": resuming, "contentGraceSeconds": 0}
        logs = []
        c = Checkpoints(cfg, FileStorage(url), state, {"run": "stall", "generation": 1, "attempt": attempt}, logs.append,
                        lambda text: None, lambda publish=False, **fields: None, lambda: False, lambda: None, faults=faults)
        return c, ckpt, logs

    def test_the_restore_time_is_not_a_stall(self):
        first, ckpt, _ = self.checkpoints(1, False)
        first.restore()
        with open(os.path.join(ckpt, "ckpt.pt"), "wb") as f:
            f.write(b"step 10")
        self.assertIsNotNone(first.sync(final=True, clean_exit=True))

        faults = Faults(lambda items: None, lambda m: None)
        clock = Clock(1000.0)
        with mock.patch.object(checkpoints_module, "time", clock):
            second, ckpt2, logs = self.checkpoints(2, True, faults)
            self.assertTrue(second.restore())
            clock.now = 1100.0  # the restore and the install took 100 s; now the job starts
            second.start_watching(os.path.join(self.root, "job.log"), 0)
            # The job rewrites ckpt.pt just before the sync: the sync leaves it out (changed 0 s
            # ago, on the same driven clock) and publishes nothing new.
            second.capture.clock = clock.time
            clock.now = 1101.0
            with open(os.path.join(ckpt2, "ckpt.pt"), "wb") as f:
                f.write(b"step 11")
            os.utime(os.path.join(ckpt2, "ckpt.pt"), (clock.now, clock.now))
            self.assertIsNone(second.sync(final=False))
            self.assertEqual([i["path"] for i in second.last_left_out], ["ckpt.pt"])
            second.check_stalled()
            self.assertFalse(faults.active("CheckpointSyncStalled"), logs)
            # Two intervals of the job's own time with nothing published: that is a stall.
            clock.now = 1102.5
            second.check_stalled()
            self.assertTrue(faults.active("CheckpointSyncStalled"))


if __name__ == "__main__":
    unittest.main()
