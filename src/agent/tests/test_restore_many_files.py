"""Restoring a checkpoint of many small files (break9: many-small-files-slow-restore-false-stall).
Where each storage call is a process (S3: the AWS CLI), the contents come down with one recursive
copy of the contents prefix instead of one process each, leaving the largest unwanted contents
out by name; every file is still checked. A FileStorage that says its calls are processes, and
counts them, stands in for S3 (s3-storage.test.ts runs the real CLI)."""
import os
import tempfile
import unittest

from runctl_agent import checkpoint_restore
from runctl_agent.checkpoint_restore import bulk_excludes, restore_checkpoint
from runctl_agent.checkpoint_store import CheckpointStore, contents_prefix
from runctl_agent.checkpoint_tree import scan_tree
from runctl_agent.storage import FileStorage


class CountingStorage(FileStorage):
    PROCESS_PER_CALL = True

    def __init__(self, url):
        FileStorage.__init__(self, url)
        self.calls = []

    def get_bytes(self, key):
        self.calls.append(("get_bytes", key))
        return FileStorage.get_bytes(self, key)

    def get_file(self, key, dest):
        self.calls.append(("get_file", key))
        return FileStorage.get_file(self, key, dest)

    def get_tree(self, prefix, local_dir, exclude=()):
        self.calls.append(("get_tree", prefix, sorted(exclude)))
        return FileStorage.get_tree(self, prefix, local_dir, exclude)


class ManySmallFilesTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.root = os.path.join(self.tmp.name, "ckpt")
        os.makedirs(os.path.join(self.root, "small"))
        os.makedirs(os.path.join(self.tmp.name, "state"))
        self.storage = CountingStorage("file://" + os.path.join(self.tmp.name, "storage"))
        self.store = CheckpointStore(self.storage, "r", 1, 1, os.path.join(self.tmp.name, "state"), lambda m: None, grace_seconds=0)

    def tearDown(self):
        self.tmp.cleanup()

    def write(self, rel, data):
        with open(os.path.join(self.root, *rel.split("/")), "wb") as f:
            f.write(data)

    def publish(self):
        return self.store.sync_tree(self.root, scan_tree(self.root))["manifest"]

    def restore(self, cid):
        dest = os.path.join(self.tmp.name, "out")
        del self.storage.calls[:]
        got, reason = restore_checkpoint(self.store, 1, cid, dest, os.path.join(self.tmp.name, "scratch"))
        return dest, got, reason

    def test_one_recursive_copy_for_many_contents_and_every_file_checked(self):
        for i in range(300):
            self.write("small/%05d.json" % i, b'{"i": %d}' % i)
        self.write("same-a", b"shared")
        self.write("same-b", b"shared")
        self.write("old.bin", b"o" * 5000)
        first = self.publish()
        os.unlink(os.path.join(self.root, "old.bin"))  # a content the newest checkpoint does not need
        self.write("small/00007.json", b'{"i": "seven"}')
        m = self.publish()
        dest, got, reason = self.restore(m["id"])
        self.assertIsNone(reason)
        self.assertEqual([c[0] for c in self.storage.calls if c[0] != "get_bytes" or "MANIFEST" not in c[1]],
                         ["get_tree"])
        unwanted = sorted(set(f["sha256"] for f in first["files"]) - set(f["sha256"] for f in m["files"]))
        self.assertEqual(self.storage.calls[-1], ("get_tree", contents_prefix("runs/r"), unwanted))
        self.assertEqual(len(os.listdir(os.path.join(dest, "small"))), 300)
        with open(os.path.join(dest, "small", "00007.json"), "rb") as f:
            self.assertEqual(f.read(), b'{"i": "seven"}')
        with open(os.path.join(dest, "same-b"), "rb") as f:
            self.assertEqual(f.read(), b"shared")
        self.assertFalse(os.path.exists(os.path.join(dest, "old.bin")))

        # An altered content is still refused, and a missing one is named.
        sha = [f["sha256"] for f in m["files"] if f["path"] == "small/00042.json"][0]
        stored = self.storage.local_path(contents_prefix("runs/r") + sha)
        with open(stored, "wb") as f:
            f.write(b'{"i": 43}')
        self.assertEqual(self.restore(m["id"])[2], "file small/00042.json fails its sha256 check")
        os.unlink(stored)
        self.assertEqual(self.restore(m["id"])[2], "file small/00042.json is missing from storage (content %s)" % sha)

    def test_few_contents_are_fetched_one_by_one(self):
        for i in range(5):
            self.write("small/%05d.json" % i, b"%d" % i)
        m = self.publish()
        dest, got, reason = self.restore(m["id"])
        self.assertIsNone(reason)
        self.assertEqual(sorted(c[0] for c in self.storage.calls), ["get_bytes"] * 6)  # the manifest, 5 contents
        self.assertEqual(len(os.listdir(os.path.join(dest, "small"))), 5)

    def test_bulk_plan(self):
        wanted = dict(("w%03d" % i, 10) for i in range(40))
        self.assertIsNone(bulk_excludes(dict(list(wanted.items())[:10]), {}))  # few: one call each is fine
        stored = dict((sha, (size, 0)) for sha, size in wanted.items())
        stored["big"] = (10 ** 9, 0)
        self.assertEqual(bulk_excludes(wanted, stored), ["big"])
        # More unwanted contents than filters, and what they would bring along outweighs the need.
        many = dict(("u%04d" % i, (checkpoint_restore.BULK_EXTRA_BYTES, 0)) for i in range(checkpoint_restore.BULK_MAX_EXCLUDES + 2))
        many.update(stored)
        self.assertIsNone(bulk_excludes(wanted, many))


if __name__ == "__main__":
    unittest.main()
