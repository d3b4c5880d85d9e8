"""How a job declares a save (steps.py, checkpoints.Checkpoints.tick; docs/checkpoints.md): the
forms accepted, and a declaration whose step is malformed (break9 DOC) still declaring the save,
without a step, with one warning per distinct declaration in the job's log and the agent log."""
import os
import tempfile
import time
import unittest

from runctl_agent.checkpoints import MARKER_SETTLE_SECONDS, Checkpoints
from runctl_agent.steps import marker_step, saved_line

BAD_STEP = "is not a step: N must be a non-negative integer below 2^53"


class SavedLineTest(unittest.TestCase):
    def test_lines(self):
        cases = [
            ("RUNCTL_CHECKPOINT_SAVED step=40", (True, 40, None)),
            ("RUNCTL_CHECKPOINT_SAVED", (True, None, None)),
            ("  RUNCTL_CHECKPOINT_SAVED  step = 7 ", (True, 7, None)),
            # logging frameworks' prefixes
            ("INFO trainer: RUNCTL_CHECKPOINT_SAVED step=90", (True, 90, None)),
            ("[2026-11-29 21:00:00,123][train][INFO] - RUNCTL_CHECKPOINT_SAVED step=9007199254740991", (True, 2 ** 53 - 1, None)),
            # malformed steps: the save is declared, the step is not
            ("RUNCTL_CHECKPOINT_SAVED step=abc", (True, None, "`step=abc` " + BAD_STEP)),
            ("RUNCTL_CHECKPOINT_SAVED step=-1", (True, None, "`step=-1` " + BAD_STEP)),
            ("RUNCTL_CHECKPOINT_SAVED step=80.5", (True, None, "`step=80.5` " + BAD_STEP)),
            ("RUNCTL_CHECKPOINT_SAVED step=123456789012345678901234567890", (True, None, "`step=123456789012345678901234567890` " + BAD_STEP)),
            ("RUNCTL_CHECKPOINT_SAVED step=9007199254740992", (True, None, "`step=9007199254740992` " + BAD_STEP)),
            ("INFO: RUNCTL_CHECKPOINT_SAVED step=12abc", (True, None, "`step=12abc` " + BAD_STEP)),
            ("RUNCTL_CHECKPOINT_SAVED at 40", (True, None, "`at 40` after RUNCTL_CHECKPOINT_SAVED is not `step=N`")),
            # not declarations: the token mentioned inside other text, or part of a longer word
            ("we print RUNCTL_CHECKPOINT_SAVED after saving", (False, None, None)),
            ("+ echo 'RUNCTL_CHECKPOINT_SAVED step=5'", (False, None, None)),
            ("RUNCTL_CHECKPOINT_SAVED_AT step=5", (False, None, None)),
            ("step=5/100 loss=2.1", (False, None, None)),
        ]
        for line, expected in cases:
            with self.subTest(line):
                self.assertEqual(saved_line(line), expected)

    def test_markers(self):
        self.assertEqual(marker_step(b"step=30\n"), (30, None))
        self.assertEqual(marker_step(b"30"), (30, None))
        self.assertEqual(marker_step(b'{"step": 40}'), (40, None))
        self.assertEqual(marker_step(b""), (None, None))
        for data in (b"step=12abc", b'{"step": "70"}', b"-3", b"80.5", b'{"step": 1e30}', b'{"step": -1}', b"step=123456789012345678901234567890"):
            with self.subTest(data):
                step, problem = marker_step(data)
                self.assertIsNone(step)
                self.assertIn("below 2^53" if b"step" not in data or b"{" not in data else "from 0 to 2^53-1", problem)


class TickTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = os.path.join(self.tmp.name, "ckpt")
        self.state = os.path.join(self.tmp.name, "state")
        os.makedirs(self.dir)
        os.makedirs(self.state)
        self.log_path = os.path.join(self.tmp.name, "job.log")
        self.logs, self.notes = [], []
        cfg = {"checkpointDir": self.dir, "syncIntervalSeconds": 1, "storage": "file://" + os.path.join(self.tmp.name, "s"),
               "run": "d", "generation": 1, "attempt": 1, "keep": 3, "resuming": False}
        self.c = Checkpoints(cfg, None, self.state, {}, self.logs.append, self.note, lambda publish=False, **f: None,
                             lambda: False, lambda: None)
        open(self.log_path, "w").close()
        self.c.start_watching(self.log_path, 0)

    def tearDown(self):
        self.tmp.cleanup()

    def note(self, text):
        """Like joblog.note: the agent's line lands in job.log, which tick reads too."""
        self.notes.append(text)
        self.job_prints("[runctl] " + text)

    def job_prints(self, *lines):
        with open(self.log_path, "a") as f:
            for line in lines:
                f.write(line + "\n")

    def test_malformed_line_declares_without_step_and_warns_once(self):
        self.job_prints("step=80/100", "RUNCTL_CHECKPOINT_SAVED step=80.5")
        self.assertTrue(self.c.tick(None))
        self.assertEqual(self.c.declared, (None, None))
        self.assertEqual(len(self.notes), 1)
        self.assertIn("'RUNCTL_CHECKPOINT_SAVED step=80.5'", self.notes[0])
        self.assertIn("the save counts, with its step unknown", self.notes[0])
        self.assertIn("a non-negative integer below 2^53", self.notes[0])
        self.assertEqual([self.notes[0]], [m for m in self.logs if m.startswith("warning")])
        # The warning itself, now in job.log, is not a declaration; the same bad line again is
        # not warned about again; a prefixed good line declares its step.
        self.c.declared = None
        self.assertFalse(self.c.tick(None))
        self.job_prints("RUNCTL_CHECKPOINT_SAVED step=80.5", "2026-11-29 INFO trainer: RUNCTL_CHECKPOINT_SAVED step=90")
        self.assertTrue(self.c.tick(None))
        self.assertEqual(self.c.declared, (90, "line"))
        self.assertEqual(len(self.notes), 1)

    def test_malformed_marker_declares_without_step_and_warns(self):
        with open(os.path.join(self.dir, ".runctl-saved"), "w") as f:
            f.write('{"step": "70"}')
        self.assertTrue(self.c.tick(None))
        self.assertEqual(self.c.declared, (None, None))
        self.assertEqual(len(self.notes), 1)
        self.assertIn("in the marker file .runctl-saved", self.notes[0])
        self.assertFalse(self.c.tick(None))

    def test_a_marker_written_in_place_is_read_once_it_holds_its_step(self):
        # open(marker, "w") truncates, then writes: read in between, the save lost its step
        # (break test 20, 1 run in 3).
        marker = os.path.join(self.dir, ".runctl-saved")
        with open(marker, "w") as f:
            self.assertFalse(self.c.tick(None))
            f.write("step=3\n")
        self.assertTrue(self.c.tick(None))
        self.assertEqual(self.c.declared, (3, "marker"))

    def test_a_marker_that_stays_empty_declares_a_save_without_its_step(self):
        open(os.path.join(self.dir, ".runctl-saved"), "w").close()
        self.assertFalse(self.c.tick(None))
        time.sleep(MARKER_SETTLE_SECONDS)
        self.assertTrue(self.c.tick(None))
        self.assertEqual(self.c.declared, (None, None))


if __name__ == "__main__":
    unittest.main()
