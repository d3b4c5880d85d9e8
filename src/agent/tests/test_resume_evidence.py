"""The "fall back after a failed resume" rule (resume_evidence.py, docs/checkpoints.md): what counts
as newer training state, and the agent's restore and retention built on it, driven through the real
Checkpoints and a file:// store, attempt after attempt, as the agents of one run would."""

import hashlib
import json
import os
import tempfile
import unittest

from runctl_agent.checkpoints import Checkpoints, NoCheckpointLeft
from runctl_agent.resume_evidence import avoided_checkpoints, holds_newer_state
from runctl_agent.storage import FileStorage

A, B, C = "a" * 64, "b" * 64, "c" * 64


def sha(data):
    return hashlib.sha256(data).hexdigest()


def entry(path, data):
    return {"path": path, "size": len(data), "sha256": sha(data)}


class NewerStateRuleTest(unittest.TestCase):
    """holds_newer_state(base, later, prefix_sha256) on manifests alone, plus prefix reads."""

    def setUp(self):
        self.contents = {}

    def manifest(self, files, step=None):
        m = {"files": []}
        for path, data in files.items():
            self.contents[sha(data)] = data
            m["files"].append(entry(path, data))
        if step is not None:
            m["step"] = step
        return m

    def prefix(self, e, n):
        data = self.contents.get(e["sha256"])
        return None if data is None else sha(data[:n])

    def newer(self, base, later):
        return holds_newer_state(base, later, self.prefix)

    def test_a_log_that_only_grew_by_appending_is_not_newer_state(self):
        base = self.manifest({"model.bin": b"BAD 30", "train.log": b"attempt 1 started\n"}, step=30)
        later = self.manifest({"model.bin": b"BAD 30", "train.log": b"attempt 1 started\nattempt 2 started\n"})
        self.assertFalse(self.newer(base, later))

    def test_a_rewritten_model_is_newer_state_whatever_its_size(self):
        base = self.manifest({"model.bin": b"GOOD 20", "train.log": b"x\n"})
        self.assertTrue(self.newer(base, self.manifest({"model.bin": b"GOOD 30", "train.log": b"x\n"})))  # same size
        # Grown, but not by appending (its first bytes differ): a rewrite, not a log.
        self.assertTrue(self.newer(base, self.manifest({"model.bin": b"GOOD 300", "train.log": b"x\n"})))
        # Grown by appending to a file, while another was rewritten: newer.
        self.assertTrue(self.newer(base, self.manifest({"model.bin": b"GOOD 30", "train.log": b"x\ny\n"})))

    def test_a_new_file_is_newer_state_unless_empty_and_a_removed_one_is_not(self):
        base = self.manifest({"model.bin": b"M1"})
        self.assertTrue(self.newer(base, self.manifest({"model.bin": b"M1", "model_epoch3.pt": b"M2"})))
        self.assertFalse(self.newer(base, self.manifest({"model.bin": b"M1", "started": b""})))
        self.assertFalse(self.newer(base, self.manifest({})))

    def test_known_steps_decide_when_both_are_recorded(self):
        base = self.manifest({"checkpoint-30/model.bin": b"W30"}, step=30)
        # A Hugging Face job's crashed attempt: same folders, a new TensorBoard file: not newer.
        self.assertFalse(self.newer(base, self.manifest({"checkpoint-30/model.bin": b"W30", "runs/events.out": b"ev"}, step=30)))
        self.assertTrue(self.newer(base, self.manifest({"checkpoint-30/model.bin": b"W30", "checkpoint-40/model.bin": b"W40"}, step=40)))

    def test_a_grown_file_that_cannot_be_read_back_counts_as_rewritten(self):
        base = self.manifest({"train.log": b"a\n"})
        later = {"files": [entry("train.log", b"a\nb\n")]}  # its content is not stored
        self.assertTrue(self.newer(base, later))


class EvidenceReadsTest(unittest.TestCase):
    def test_only_the_failed_attempts_own_manifests_are_read(self):
        """Each manifest read is a storage GET (a second on S3): an old failed attempt costs the
        reads of what it published, not of every checkpoint published since."""
        class Statuses:
            def get_bytes(self, key):
                if key == "runs/r/g1/a2/status.json":
                    return json.dumps({"phase": "failed", "pid": 7, "exitCode": 1, "restoredFrom": {"id": "00000003"},
                                       "lastCheckpoint": {"id": "00000004"}}).encode("utf-8")
                return None
        model = entry("model.bin", b"BAD")
        manifests = {"00000003": {"attempt": 1, "files": [model]}, "00000004": {"attempt": 2, "files": [model]}}
        published = ["%08d" % i for i in range(3, 60)]
        read = []

        def manifest(cid):
            read.append(cid)
            return manifests.get(cid, {"attempt": 3, "files": [entry("model.bin", cid.encode())], "step": int(cid)})
        evidence = avoided_checkpoints(Statuses(), "runs/r", 1, 10, published, manifest, lambda e, n: None)
        self.assertEqual(sorted(evidence), ["00000003", "00000004"])
        self.assertEqual(sorted(set(read)), ["00000003", "00000004"])


class FallbackAcrossAttemptsTest(unittest.TestCase):
    """The agents of attempts 1-4 of one run over one file:// storage (the break9 input: a job that
    appends to train.log in its checkpoint folder and then crashes loading a bad model.bin)."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.url = "file://" + os.path.join(self.tmp.name, "storage")
        self.storage = FileStorage(self.url)

    def tearDown(self):
        self.tmp.cleanup()

    def attempt(self, n, keep=2):
        work = os.path.join(self.tmp.name, "a%d" % n)
        os.makedirs(os.path.join(work, "state"))
        cfg = {"checkpointDir": os.path.join(work, "ckpt"), "syncIntervalSeconds": 1, "storage": self.url,
               "run": "r", "generation": 1, "attempt": n, "keep": keep, "resuming": n > 1, "contentGraceSeconds": 0}
        status = {}
        ckpts = Checkpoints(cfg, self.storage, os.path.join(work, "state"), {"run": "r", "generation": 1, "attempt": n},
                            lambda message: None, lambda text: None, lambda publish=False, **f: status.update(f),
                            lambda: False, lambda: None)
        ckpts.status = status
        ckpts.restore()
        return ckpts

    def write(self, ckpts, name, data, append=False):
        with open(os.path.join(ckpts.cfg["checkpointDir"], name), "ab" if append else "wb") as f:
            f.write(data)

    def save(self, ckpts, model, step=None):
        """The job writes model.bin (and declares the save when step is given); the agent syncs."""
        self.write(ckpts, "model.bin", model)
        ckpts.declared = (step, "line") if step is not None else None
        ref = ckpts.sync(final=True, clean_exit=True)
        ckpts._retain()
        return ref

    def crash(self, ckpts, code=1):
        """The job exits with `code`: the final sync, retention, and the attempt's final status."""
        ckpts.sync(final=True, clean_exit=False)
        ckpts._retain()
        status = dict(ckpts.status, phase="failed", pid=4242, exitCode=code)
        self.storage.put_bytes("runs/r/g1/a%d/status.json" % ckpts.cfg["attempt"], json.dumps(status).encode("utf-8"))

    def published(self):
        root = os.path.join(self.tmp.name, "storage", "runs", "r", "g1", "checkpoints")
        return sorted(c for c in os.listdir(root) if os.path.exists(os.path.join(root, c, "MANIFEST.json")))

    def read(self, ckpts, name):
        with open(os.path.join(ckpts.cfg["checkpointDir"], name), "rb") as f:
            return f.read()

    def test_a_crash_on_load_after_appending_a_log_falls_back_and_training_progress_is_kept(self):
        a1 = self.attempt(1)
        self.write(a1, "train.log", b"attempt 1 started\n")
        self.assertEqual(self.save(a1, b"GOOD 10", 10)["id"], "00000001")
        self.save(a1, b"GOOD 20", 20)
        self.save(a1, b"BAD 30", 30)
        self.crash(a1)  # an unrelated crash with nothing restored: no evidence
        self.assertEqual(self.published(), ["00000002", "00000003"])  # keep 2

        a2 = self.attempt(2)
        self.assertEqual(a2.status["restoredFrom"], {"id": "00000003"})
        self.write(a2, "train.log", b"attempt 2 started\n", append=True)  # then it crashes loading BAD 30
        self.crash(a2)
        # Its final sync published BAD 30 with the longer log; retention did not count it nor the
        # checkpoint it restored, so 00000002 (the fallback) is still there with keep 2.
        self.assertEqual(self.published(), ["00000002", "00000003", "00000004"])

        a3 = self.attempt(3)
        self.assertEqual(self.read(a3, "model.bin"), b"GOOD 20")
        restored = a3.status["restoredFrom"]
        self.assertEqual(restored["id"], "00000002")
        self.assertEqual(restored["fallbackFrom"], "00000004")
        self.assertEqual(restored["avoided"], [
            {"id": "00000004", "attempt": 2, "reason": "the job exited with code 1", "descendsFrom": "00000003"},
            {"id": "00000003", "attempt": 2, "reason": "the job exited with code 1"},
        ])
        # What `describe` lists as kept is what retention keeps: the ruled-out ones too, for now.
        self.assertEqual([c["id"] for c in a3.status["checkpoints"]], ["00000002", "00000003", "00000004"])
        self.write(a3, "train.log", b"attempt 3 started\n", append=True)
        self.assertEqual(self.save(a3, b"GOOD 30", 30)["id"], "00000005")  # it trained: newer training state
        self.crash(a3)  # then crashed from an unrelated bug
        self.assertEqual(self.published(), ["00000002", "00000003", "00000004", "00000005"])

        a4 = self.attempt(4)
        # Attempt 3 saved newer state: its failure is no evidence, its progress is restored.
        self.assertEqual(a4.status["restoredFrom"], {"id": "00000005"})
        self.assertEqual(self.read(a4, "model.bin"), b"GOOD 30")
        self.save(a4, b"GOOD 40", 40)
        # Now progress exists past the suspects: keep 2 among the checkpoints a resume may use
        # (00000005, 00000006); the known-bad ones older than those go.
        self.assertEqual(self.published(), ["00000005", "00000006"])

    def test_an_agent_that_adopts_the_job_after_a_restart_keeps_the_fallback_too(self):
        a1 = self.attempt(1)
        self.write(a1, "train.log", b"1\n")
        self.save(a1, b"GOOD 10", 10)
        self.save(a1, b"BAD 20", 20)
        self.crash(a1)
        a2 = self.attempt(2)
        restored = a2.status["restoredFrom"]
        # The agent dies; a new one (no memory of the restore) adopts the job from its launch record.
        work = os.path.dirname(a2.cfg["checkpointDir"])
        adopter = Checkpoints(dict(a2.cfg), self.storage, os.path.join(work, "state"), {"run": "r", "generation": 1, "attempt": 2},
                              lambda message: None, lambda text: None, lambda publish=False, **f: None, lambda: False, lambda: None)
        adopter.adopt_restored(restored)
        self.write(a2, "train.log", b"2\n", append=True)
        adopter.sync(final=True, clean_exit=False)
        adopter._retain()
        self.assertEqual(self.published(), ["00000001", "00000002", "00000003"])

    def test_every_checkpoint_ruled_out_fails_listing_each_with_where_it_came_from(self):
        a1 = self.attempt(1, keep=1)
        self.write(a1, "train.log", b"1\n")
        self.save(a1, b"BAD 10", 10)
        self.crash(a1)
        a2 = self.attempt(2, keep=1)
        self.write(a2, "train.log", b"2\n", append=True)
        self.crash(a2)
        with self.assertRaises(NoCheckpointLeft) as raised:
            self.attempt(3, keep=1)
        self.assertIn("00000002 (attempt 2, published from 00000001: the job exited with code 1), "
                      "00000001 (attempt 2: the job exited with code 1)", str(raised.exception))

    def test_a_status_whose_checkpoints_cannot_be_judged_is_no_evidence(self):
        a1 = self.attempt(1, keep=10)
        self.save(a1, b"M1", 1)
        self.save(a1, b"M2", 2)
        self.crash(a1)
        a2 = self.attempt(2, keep=10)
        self.assertEqual(a2.status["restoredFrom"], {"id": "00000002"})
        # It claims a checkpoint newer than what it restored, but none of its own is left.
        self.crash(a2)
        status = json.loads(self.storage.get_bytes("runs/r/g1/a2/status.json").decode("utf-8"))
        status["lastCheckpoint"] = {"id": "00000009"}
        self.storage.put_bytes("runs/r/g1/a2/status.json", json.dumps(status).encode("utf-8"))
        self.assertEqual(self.attempt(3, keep=10).status["restoredFrom"], {"id": "00000002"})


if __name__ == "__main__":
    unittest.main()
