"""The bounded progress history and the follower that feeds it from job.log."""

import json
import os
import tempfile
import unittest

from runctl_agent import progress_history
from runctl_agent.progress_history import History, ProgressFollower, downsample
from runctl_agent.storage import FileStorage

KEY = {"run": "r", "generation": 1, "attempt": 2}


class HistoryTest(unittest.TestCase):
    def test_same_step_merges_and_new_steps_append(self):
        h = History()
        h.record(10, 100, {"loss": 2.0}, at="t1")
        h.record(10, 100, {"val_loss": 2.5}, at="t2")
        h.record(11, 100, {"loss": 1.9}, at="t3")
        self.assertEqual(h.points, [
            {"time": "t2", "step": 10, "total": 100, "metrics": {"loss": 2.0, "val_loss": 2.5}},
            {"time": "t3", "step": 11, "total": 100, "metrics": {"loss": 1.9}},
        ])

    def test_downsampling_keeps_sparse_metrics_and_the_last_point(self):
        points = [{"time": "t", "step": i, "metrics": {"loss": 1.0}} for i in range(10)]
        points[4]["metrics"]["val_loss"] = 2.0
        kept = downsample(points)
        self.assertEqual([p["step"] for p in kept], [1, 3, 4, 7, 8, 9])
        self.assertIn(points[4], kept)

    def test_points_and_bytes_stay_bounded(self):
        h = History()
        for step in range(progress_history.MAX_POINTS * 3):
            h.record(step, None, {"loss": 1.0 / (step + 1), "val_loss": 2.0})
        self.assertLessEqual(len(h.points), progress_history.MAX_POINTS)
        self.assertEqual(h.points[-1]["step"], progress_history.MAX_POINTS * 3 - 1)
        steps = [p["step"] for p in h.points]
        self.assertEqual(steps, sorted(steps))
        wide = History([{"time": "2026-01-01T00:00:00.000Z", "step": i, "metrics": {"m%02d" % j: 0.123456789 for j in range(16)}}
                        for i in range(progress_history.MAX_POINTS)])
        data = wide.document(KEY)
        self.assertLessEqual(len(data), progress_history.MAX_BYTES)
        doc = json.loads(data.decode("utf-8"))
        self.assertEqual((doc["version"], doc["run"], doc["attempt"]), (1, "r", 2))


class FollowerTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.state = os.path.join(self.tmp.name, "state")
        os.makedirs(self.state)
        self.storage = FileStorage("file://" + os.path.join(self.tmp.name, "store"))
        self.logged = []

    def tearDown(self):
        self.tmp.cleanup()

    def follower(self, pattern=None):
        return ProgressFollower(KEY, self.storage, "runs/r/g1/a2/", self.state, pattern, lambda b: b, self.logged.append)

    def write(self, data):
        with open(os.path.join(self.state, "job.log"), "ab") as f:
            f.write(data)

    def stored(self):
        return json.loads(self.storage.get_bytes("runs/r/g1/a2/progress.json").decode("utf-8"))

    def test_follows_redraws_from_the_job_start_and_continues_after_a_restart(self):
        self.write(b"setup: step=99/100 loss=9\n")
        start = os.path.getsize(os.path.join(self.state, "job.log"))
        f = self.follower()
        f.begin(start)
        self.write(b"[runctl-agent] 2026 phase training\n")
        self.write(b" 10%|#         | 10/100 [00:01<00:09, 9.9it/s, loss=3.0]\r 20%|##        | 20/100 [00:02<00:08, 9.9it/s, loss=2.5]\r 30%|###")
        self.assertEqual(f.refresh(), {"step": 20, "total": 100, "loss": 2.5})
        f.publish()
        self.assertEqual([(p["step"], p["metrics"]) for p in self.stored()["points"]], [(10, {"loss": 3.0}), (20, {"loss": 2.5})])
        self.write(b"       | 30/100 [00:03<00:07, 9.9it/s, loss=2.0]\r")
        f.refresh()
        f.publish()  # within PUBLISH_SECONDS: not written yet
        self.assertEqual(len(self.stored()["points"]), 2)
        f.publish(force=True)
        self.assertEqual(self.stored()["points"][-1]["step"], 30)
        again = self.follower()
        again.begin(start)
        self.assertEqual(again.progress(), {"step": 30, "total": 100, "loss": 2.0})
        self.write(b" 40%|####      | 40/100 [00:04<00:06, 9.9it/s, loss=1.5]\n")
        again.refresh()
        again.publish(force=True)
        self.assertEqual([p["step"] for p in self.stored()["points"]], [10, 20, 30, 40])

    def test_a_new_job_starts_a_new_history(self):
        f = self.follower()
        f.begin(0)
        self.write(b"step=5/10 loss=1\n")
        f.refresh()
        f.publish(force=True)
        other = self.follower("never (?P<step>[0-9]+)")
        other.begin(100)
        self.assertIsNone(other.progress())


if __name__ == "__main__":
    unittest.main()
