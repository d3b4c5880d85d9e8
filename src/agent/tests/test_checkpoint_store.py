import hashlib
import json
import os
import time
import unittest

from runctl_agent.checkpoint_restore import restore_checkpoint
from runctl_agent.checkpoint_store import CheckpointStore, contents_prefix, retired_prefix
from runctl_agent.checkpoint_tree import scan_tree
from runctl_agent.storage import FileStorage
from tests.support import checkpoint_dirs


class StoreTest(unittest.TestCase):
    def setUp(self):
        checkpoint_dirs(self)
        self.store = self.make(grace=0)

    def make(self, grace, generation=1, attempt=1):
        return CheckpointStore(self.storage, "r", generation, attempt, self.state, self.logs.append, grace_seconds=grace)


    def write(self, rel, data, mode=None):
        path = os.path.join(self.root, *rel.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        if mode is not None:
            os.chmod(path, mode)

    def sync(self, store=None, step=None):
        store = store or self.store
        return store.sync_tree(self.root, scan_tree(self.root), step=step)

    def contents(self):
        return sorted(k for k, _, _ in self.storage.list_objects(contents_prefix("runs/r")))

    def test_round_trip_keeps_files_modes_empty_dirs_and_inner_links(self):
        self.write("checkpoint-10/model.safetensors", b"w" * 1000)
        self.write("checkpoint-10/run.sh", b"#!/bin/sh\n", mode=0o755)
        os.makedirs(os.path.join(self.root, "empty", "nested"))
        os.symlink("checkpoint-10", os.path.join(self.root, "latest"))
        os.symlink("/etc/passwd", os.path.join(self.root, "escape"))
        result = self.sync(step=10)
        m = result["manifest"]
        self.assertEqual(m["step"], 10)
        self.assertEqual([r["path"] for r in result["refused"]], ["escape"])
        dest = os.path.join(self.tmp.name, "out")
        got, reason = restore_checkpoint(self.store, 1, m["id"], dest, os.path.join(self.tmp.name, "scratch"))
        self.assertIsNone(reason)
        with open(os.path.join(dest, "checkpoint-10", "model.safetensors"), "rb") as f:
            self.assertEqual(f.read(), b"w" * 1000)
        self.assertEqual(os.stat(os.path.join(dest, "checkpoint-10", "run.sh")).st_mode & 0o777, 0o755)
        self.assertTrue(os.path.isdir(os.path.join(dest, "empty", "nested")))
        self.assertEqual(os.readlink(os.path.join(dest, "latest")), "checkpoint-10")
        self.assertFalse(os.path.lexists(os.path.join(dest, "escape")))

    def test_a_publish_keeps_what_another_session_stored_ahead_known(self):
        # The stager stores the next save's shard while a sync publishes this one (two sessions
        # at once): the publish must not forget it, or the declared sync copies it again.
        self.write("checkpoint-1/model.bin", b"1" * 4096)
        self.write("checkpoint-2/model.bin", b"2" * 4096)
        tree = dict((e.path, e) for e in scan_tree(self.root).files)
        ahead, now = self.store.begin(), self.store.begin()
        self.assertEqual(len(ahead.add_files(self.root, [tree["checkpoint-2/model.bin"]])["accepted"]), 1)
        self.assertEqual(len(now.add_files(self.root, [tree["checkpoint-1/model.bin"]])["accepted"]), 1)
        ahead.keep_index()
        now.publish([now.accepted["checkpoint-1/model.bin"][0]], [], [])
        self.assertEqual(sorted(self.store.load_index()), ["checkpoint-1/model.bin", "checkpoint-2/model.bin"])
        before = self.store.bytes_written
        m = self.sync()["manifest"]
        self.assertEqual((m["sync"]["filesUploaded"], m["sync"]["filesReused"]), (1, 1))
        self.assertLess(self.store.bytes_written - before, 4096)  # the manifest alone: nothing read again

    def test_hard_links_to_one_file_are_read_and_stored_once(self):
        self.write("a.bin", b"h" * 65536)
        os.link(os.path.join(self.root, "a.bin"), os.path.join(self.root, "b.bin"))
        before = self.store.bytes_written
        m = self.sync()["manifest"]
        self.assertEqual(sorted((f["path"], f["sha256"]) for f in m["files"]),
                         [("a.bin", hashlib.sha256(b"h" * 65536).hexdigest()), ("b.bin", hashlib.sha256(b"h" * 65536).hexdigest())])
        self.assertLess(self.store.bytes_written - before, 65536 + 4096)  # one copy and the manifest

    def test_second_sync_uploads_only_the_new_shard(self):
        for i in range(4):
            self.write("checkpoint-1/shard-%d.bin" % i, os.urandom(4096))
        first = self.sync()["manifest"]["sync"]
        self.assertEqual((first["filesUploaded"], first["filesReused"]), (4, 0))
        self.write("checkpoint-2/shard-0.bin", os.urandom(4096))
        second = self.sync()["manifest"]["sync"]
        self.assertEqual(second, {"filesUploaded": 1, "filesReused": 4, "bytesUploaded": 4096, "bytesReused": 4 * 4096})
        self.assertEqual(len(self.contents()), 5)

    def test_large_files_copied_while_hashed_in_parallel_are_stored_under_their_hash(self):
        import hashlib
        big = os.urandom(3 * 1024 * 1024)
        self.write("checkpoint-1/shard.bin", big)
        self.write("checkpoint-1/same-size.bin", os.urandom(len(big)))
        m = self.sync()["manifest"]
        self.assertEqual(m["sync"]["filesUploaded"], 2)
        for f in m["files"]:
            with open(self.storage.local_path(contents_prefix("runs/r") + f["sha256"]), "rb") as fh:
                self.assertEqual(hashlib.sha256(fh.read()).hexdigest(), f["sha256"])
        self.write("checkpoint-2/shard.bin", big)  # the same bytes under a new path: reused
        again = self.sync()["manifest"]
        self.assertEqual((again["sync"]["filesUploaded"], again["sync"]["filesReused"]), (0, 3))
        self.assertEqual(len(self.contents()), 2)

    def test_identical_content_is_stored_once(self):
        self.write("a.bin", b"same")
        self.write("b/c.bin", b"same")
        m = self.sync()["manifest"]
        self.assertEqual(len(self.contents()), 1)
        dest = os.path.join(self.tmp.name, "out")
        self.assertIsNone(restore_checkpoint(self.store, 1, m["id"], dest, os.path.join(self.tmp.name, "s"))[1])
        with open(os.path.join(dest, "b", "c.bin"), "rb") as f:
            self.assertEqual(f.read(), b"same")

    def test_a_file_deleted_after_the_scan_is_left_out_not_refused(self):
        # A Trainer rotating its oldest checkpoint-<N>/ while a sync runs: the file is gone, which
        # is not a failure to read (no CheckpointSyncStalled); the checkpoint holds the rest.
        self.write("checkpoint-1/w.bin", b"old" * 10)
        self.write("checkpoint-2/w.bin", b"new" * 10)
        tree = scan_tree(self.root)
        os.unlink(os.path.join(self.root, "checkpoint-1", "w.bin"))
        result = self.store.sync_tree(self.root, tree)
        self.assertEqual(result["rejected"], [])
        self.assertEqual([f["path"] for f in result["manifest"]["files"]], ["checkpoint-2/w.bin"])

    def test_a_file_changed_during_the_copy_is_rejected_not_stored(self):
        self.write("ckpt.pt", b"x" * 100)
        tree = scan_tree(self.root)
        time.sleep(0.01)
        self.write("ckpt.pt", b"y" * 50)  # torch.save truncating in place after the scan
        result = self.store.sync_tree(self.root, tree)
        self.assertIsNone(result["manifest"])
        self.assertEqual([r["path"] for r in result["rejected"]], ["ckpt.pt"])
        self.assertEqual(self.contents(), [])

    def test_retention_keeps_newest_and_deletes_only_unreferenced_contents(self):
        self.write("shared.json", b"{}")
        for step in range(1, 5):
            self.write("checkpoint-%d/w.bin" % step, b"%d" % step * 10)
            if step > 2:
                os.unlink(os.path.join(self.root, "checkpoint-%d" % (step - 2), "w.bin"))
                os.rmdir(os.path.join(self.root, "checkpoint-%d" % (step - 2)))
            self.sync()
            self.store.retain(2)
        _, ids, published = self.store.ids()
        self.assertEqual(published, ["00000003", "00000004"])
        for cid in published:
            dest = os.path.join(self.tmp.name, "o" + cid)
            self.assertIsNone(restore_checkpoint(self.store, 1, cid, dest, os.path.join(self.tmp.name, "s"))[1])
        # checkpoint-1's content is referenced by no kept manifest: gone; shared.json stays.
        self.assertEqual(len(self.contents()), 4)  # shared, w2 (in 3), w3, w4

    def test_grace_period_protects_contents_of_a_just_retired_manifest(self):
        store = self.make(grace=3600)
        self.write("a.bin", b"a")
        store.sync_tree(self.root, scan_tree(self.root))
        self.write("a.bin", b"b")
        store.sync_tree(self.root, scan_tree(self.root))
        self.assertEqual(store.retain(1), ["00000001"])
        # the retired manifest's content is young and tombstoned: kept for now
        self.assertEqual(len(self.contents()), 2)
        self.assertEqual(len(self.storage.list_objects(retired_prefix("runs/r"))), 1)
        # once the grace period is over, it goes, and so does the tombstone
        later = self.make(grace=0)
        later.collect()
        self.assertEqual(len(self.contents()), 1)
        self.assertEqual(self.storage.list_objects(retired_prefix("runs/r")), [])

    def test_old_layout_checkpoints_still_restore(self):
        # Format 1, as written before issue 9: files beside MANIFEST.json in <id>/.
        base = os.path.join(self.tmp.name, "storage", "runs", "r", "g1", "checkpoints", "00000001")
        os.makedirs(os.path.join(base, "nested"))
        with open(os.path.join(base, "step"), "wb") as f:
            f.write(b"7\n")
        with open(os.path.join(base, "nested", "w.bin"), "wb") as f:
            f.write(b"abc")
        import hashlib
        manifest = {"id": "00000001", "run": "r", "generation": 1, "attempt": 1, "createdAt": "2026-01-01T00:00:00.000Z", "step": 7,
                    "files": [{"path": "step", "size": 2, "sha256": hashlib.sha256(b"7\n").hexdigest()},
                              {"path": "nested/w.bin", "size": 3, "sha256": hashlib.sha256(b"abc").hexdigest()}]}
        with open(os.path.join(base, "MANIFEST.json"), "w") as f:
            json.dump(manifest, f)
        dest = os.path.join(self.tmp.name, "out")
        got, reason = restore_checkpoint(self.store, 1, "00000001", dest, os.path.join(self.tmp.name, "s"))
        self.assertIsNone(reason)
        self.assertEqual(sorted(os.listdir(dest)), ["nested", "step"])
        with open(os.path.join(base, "nested", "w.bin"), "wb") as f:
            f.write(b"abd")
        got, reason = restore_checkpoint(self.store, 1, "00000001", dest, os.path.join(self.tmp.name, "s"))
        self.assertEqual(reason, "file nested/w.bin fails its sha256 check")

    def test_a_corrupt_content_fails_verification_and_leaves_the_target_alone(self):
        self.write("w.bin", b"good")
        m = self.sync()["manifest"]
        path = self.storage.local_path(contents_prefix("runs/r") + m["files"][0]["sha256"])
        with open(path, "wb") as f:
            f.write(b"evil")
        dest = os.path.join(self.tmp.name, "out")
        os.makedirs(dest)
        with open(os.path.join(dest, "keep"), "w") as f:
            f.write("x")
        got, reason = restore_checkpoint(self.store, 1, m["id"], dest, os.path.join(self.tmp.name, "s"))
        self.assertIsNone(got)
        self.assertEqual(reason, "file w.bin fails its sha256 check")
        self.assertEqual(os.listdir(dest), ["keep"])


class IdentityReuseTest(StoreTest):
    """What the local index lets a sync reuse unread: a file with the identity (size, mtime_ns,
    inode, device) it had when stored, under its path or the one it was renamed from."""

    def test_a_file_renamed_into_place_is_reused_unless_it_must_be_read_again(self):
        self.write("tmp/model.bin", b"m" * (2 << 20))
        self.sync()
        os.rename(os.path.join(self.root, "tmp"), os.path.join(self.root, "final"))
        path = os.path.join(self.root, "final", "model.bin")
        before = os.stat(path)
        # The same bytes count, changed in place with the identity kept (what a write through a
        # shared mapping can look like): only reread tells the session not to trust it.
        with open(path, "r+b") as f:
            f.write(b"M")
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        entries = scan_tree(self.root).files
        trusted = self.store.begin().add_files(self.root, entries)["accepted"]
        self.assertEqual(trusted[0]["sha256"], hashlib.sha256(b"m" * (2 << 20)).hexdigest())
        reread = self.store.begin().add_files(self.root, entries, reread={"final/model.bin"})["accepted"]
        self.assertEqual(reread[0]["sha256"], hashlib.sha256(b"M" + b"m" * ((2 << 20) - 1)).hexdigest())

    def test_a_small_file_is_reused_by_identity_only_under_its_own_path(self):
        # A small file deleted and another created at once could get its inode, size and timestamp.
        self.write("a/state.json", b"{}")
        self.sync()
        os.rename(os.path.join(self.root, "a"), os.path.join(self.root, "b"))
        path = os.path.join(self.root, "b", "state.json")
        before = os.stat(path)
        with open(path, "r+b") as f:
            f.write(b"[]")
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        accepted = self.store.begin().add_files(self.root, scan_tree(self.root).files)["accepted"]
        self.assertEqual(accepted[0]["sha256"], hashlib.sha256(b"[]").hexdigest())  # read, not trusted


    def test_a_file_rewritten_in_place_with_its_old_mtime_is_read_again(self):
        # cp -p, rsync -a, shutil.copy2 over an existing file: same inode and size, and the old
        # mtime set back afterwards. Only the ctime shows the change (break test 16).
        self.write("model.bin", b"a" * (2 << 20))
        self.sync()
        path = os.path.join(self.root, "model.bin")
        before = os.stat(path)
        time.sleep(0.01)  # a later ctime, even on a coarse clock
        with open(path, "r+b") as f:
            f.write(b"b" * (2 << 20))
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        accepted = self.store.begin().add_files(self.root, scan_tree(self.root).files)["accepted"]
        self.assertEqual(accepted[0]["sha256"], hashlib.sha256(b"b" * (2 << 20)).hexdigest())

    def test_a_file_rewritten_with_its_old_mtime_after_the_scan_is_rejected(self):
        self.write("model.bin", b"a" * 4096)
        entries = scan_tree(self.root).files
        path = os.path.join(self.root, "model.bin")
        before = os.stat(path)
        time.sleep(0.01)
        with open(path, "r+b") as f:
            f.write(b"b" * 4096)
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        result = self.store.begin().add_files(self.root, entries)
        self.assertEqual(result["accepted"], [])
        self.assertEqual(result["rejected"], [{"path": "model.bin", "reason": "model.bin changed while it was copied"}])


class BucketLike(object):
    """An object store that is not a folder (as S3 is to the store): FileStorage underneath,
    counting calls, with an optional hook run while put_tree uploads (a job writing meanwhile)."""

    def __init__(self, inner):
        self.inner = inner
        self.calls = []
        self.during_put = None
        self.before_put = None

    def __getattr__(self, name):
        attr = getattr(self.inner, name)
        if not callable(attr) or name == "local_path":
            raise AttributeError(name)

        def call(*args, **kwargs):
            self.calls.append(name)
            if name == "put_tree" and self.before_put is not None:
                hook, self.before_put = self.before_put, None
                hook()
            if name == "put_tree" and self.during_put is not None:
                hook, self.during_put = self.during_put, None
                result = attr(*args, **kwargs)
                hook()
                return result
            return attr(*args, **kwargs)
        return call


class BucketStoreTest(StoreTest):
    """The S3 path: hash, then one recursive upload of a folder of symbolic links to the new files."""

    def setUp(self):
        StoreTest.setUp(self)
        self.bucket = BucketLike(self.storage)
        self.store = CheckpointStore(self.bucket, "r", 1, 1, self.state, self.logs.append, grace_seconds=0)

    def test_a_file_deleted_before_the_upload_is_reported_vanished_and_the_rest_go_up(self):
        # Break test 18: a Trainer rotating checkpoint-10/ away while its upload was under way
        # stalled every sync (the CLI's "Skipping file ... File does not exist" retried as an error).
        self.write("checkpoint-10/model.safetensors", b"m" * 4096)
        self.write("checkpoint-10/optimizer.pt", b"o" * 4096)
        files = scan_tree(self.root).files
        self.bucket.before_put = lambda: os.remove(os.path.join(self.root, "checkpoint-10", "optimizer.pt"))
        result = self.store.begin().add_files(self.root, files)
        self.assertEqual(result["vanished"], ["checkpoint-10/optimizer.pt"])
        self.assertEqual([f["path"] for f in result["accepted"]], ["checkpoint-10/model.safetensors"])
        self.assertEqual(result["rejected"], [])
        self.assertEqual(self.bucket.calls.count("put_tree"), 1)
        self.assertEqual(self.contents(), [hashlib.sha256(b"m" * 4096).hexdigest()])

    def test_new_files_go_up_in_one_call_and_unchanged_ones_are_not_read(self):
        for i in range(4):
            self.write("checkpoint-1/shard-%d.bin" % i, os.urandom(2048))
        first = self.sync()["manifest"]
        self.assertEqual(self.bucket.calls.count("put_tree"), 1)
        self.assertEqual(first["sync"]["filesUploaded"], 4)
        self.assertFalse(os.path.exists(os.path.join(self.state, "upload")))  # no folder left behind
        self.bucket.calls = []
        for i in range(4):
            self.write("checkpoint-2/shard-%d.bin" % i, os.urandom(2048))
        second = self.sync()["manifest"]
        self.assertEqual(self.bucket.calls.count("put_tree"), 1)
        self.assertEqual(self.bucket.calls.count("put_file"), 0)
        self.assertEqual((second["sync"]["filesUploaded"], second["sync"]["filesReused"]), (4, 4))
        self.assertEqual(len(self.contents()), 8)

    def test_a_file_rewritten_in_place_during_the_upload_is_rejected_and_its_upload_deleted(self):
        self.write("ckpt.pt", b"x" * 100)
        self.write("other.bin", b"o" * 10)
        tree = scan_tree(self.root)

        def torch_save_again():
            time.sleep(0.01)
            with open(os.path.join(self.root, "ckpt.pt"), "r+b") as f:  # same inode, new bytes
                f.write(b"y" * 100)
        self.bucket.during_put = torch_save_again
        result = self.store.sync_tree(self.root, tree, require_all=False)
        self.assertEqual([r["path"] for r in result["rejected"]], ["ckpt.pt"])
        self.assertEqual([f["path"] for f in result["accepted"]], ["other.bin"])
        import hashlib
        self.assertEqual(self.contents(), [hashlib.sha256(b"o" * 10).hexdigest()])

    def test_a_steady_state_sync_lists_nothing_and_uploads_then_publishes(self):
        # issue 9, acceptance 3: on S3 each storage call is an AWS CLI process; after the first
        # sync's listing, a save costs its upload and its manifest, nothing more.
        self.write("checkpoint-1/shard.bin", os.urandom(2048))
        self.sync()
        for step in (2, 3):
            self.bucket.calls = []
            self.write("checkpoint-%d/shard.bin" % step, os.urandom(2048))
            m = self.sync()["manifest"]
            self.assertEqual(self.bucket.calls, ["put_tree", "put_bytes"])
            self.assertEqual((m["id"], m["sync"]["filesUploaded"], m["sync"]["filesReused"]), ("0000000%d" % step, 1, step - 1))

    def test_retention_without_a_due_collection_is_a_tombstone_and_a_delete(self):
        store = CheckpointStore(self.bucket, "r", 1, 1, self.state, self.logs.append, grace_seconds=3600)
        for step in (1, 2, 3):
            self.write("checkpoint-%d/shard.bin" % step, os.urandom(1024))
            store.sync_tree(self.root, scan_tree(self.root))
            store.retain(2)
        # The first retirement collected (nothing is an hour old yet); the second one is not due.
        self.bucket.calls = []
        self.write("checkpoint-4/shard.bin", os.urandom(1024))
        store.sync_tree(self.root, scan_tree(self.root))
        self.assertEqual(store.retain(2), ["00000002"])
        self.assertEqual(self.bucket.calls, ["put_tree", "put_bytes", "put_bytes", "delete"])
        self.assertEqual(store.ids()[2], ["00000003", "00000004"])
        # Once G/4 has passed, a retirement collects again (and lists what it must).
        store.last_collect -= 3600 / 4.0
        self.write("checkpoint-5/shard.bin", os.urandom(1024))
        store.sync_tree(self.root, scan_tree(self.root))
        self.bucket.calls = []
        store.retain(2)
        self.assertIn("list_objects", self.bucket.calls)

    def test_retention_stops_for_a_waiting_save_and_finishes_later(self):
        # A save declared while old checkpoints are retired is uploaded first (issue 9, acc. 3).
        import shutil
        for step in (1, 2, 3):
            shutil.rmtree(os.path.join(self.root, "checkpoint-%d" % (step - 1)), ignore_errors=True)
            self.write("checkpoint-%d/shard.bin" % step, os.urandom(1024))
            self.sync()
        asked = []

        def save_waiting():
            asked.append(1)
            return len(asked) > 1  # the job declares a save after the first retirement
        self.assertEqual(self.store.retain(1, should_yield=save_waiting), ["00000001"])
        self.assertTrue(self.store.yielded)
        self.assertEqual(self.store.ids()[2], ["00000002", "00000003"])
        self.assertEqual(self.store.retain(1), ["00000002"])
        self.assertFalse(self.store.yielded)
        self.assertEqual(len(self.contents()), 1)  # the collection ran to the end this time
        self.assertFalse(self.store.collect_pending)

    def test_a_view_older_than_a_quarter_of_the_grace_period_is_listed_again(self):
        store = CheckpointStore(self.bucket, "r", 1, 1, self.state, self.logs.append, grace_seconds=3600)
        self.write("a.bin", b"a")
        store.sync_tree(self.root, scan_tree(self.root))
        # Another writer of the generation published meanwhile (an interrupted attempt's final sync).
        other = CheckpointStore(self.storage, "r", 1, 2, os.path.join(self.tmp.name, "state2"), self.logs.append, grace_seconds=3600)
        os.makedirs(other.state_dir)
        self.write("b.bin", b"b")
        self.assertEqual(other.sync_tree(self.root, scan_tree(self.root))["manifest"]["id"], "00000002")
        store.view["listedAt"] -= 3600 / 4.0
        self.write("c.bin", b"c")
        self.assertEqual(store.sync_tree(self.root, scan_tree(self.root))["manifest"]["id"], "00000003")

    def test_contents_uploaded_by_a_sync_that_published_nothing_are_reused_by_the_next(self):
        # A periodic sync while a Hugging Face folder is half written (or the agent storing a
        # declared save as the job writes it) stores its finished shards; the declared sync after
        # the save uploads only the rest. Both count as uploaded for the checkpoint that first
        # names them: they are its new contents, not ones an earlier checkpoint stored.
        self.write("checkpoint-1/model-1.safetensors", os.urandom(4096))
        session = self.store.begin()
        self.assertEqual(len(session.add_files(self.root, scan_tree(self.root).files)["accepted"]), 1)
        self.write("checkpoint-1/model-2.safetensors", os.urandom(4096))
        self.bucket.calls = []
        before = self.store.bytes_written
        m = self.sync()["manifest"]
        self.assertEqual(self.bucket.calls, ["put_tree", "put_bytes"])  # model-2, then the manifest
        self.assertLess(self.store.bytes_written - before, 2 * 4096)  # not model-1 again
        self.assertEqual((m["sync"]["filesUploaded"], m["sync"]["filesReused"]), (2, 0))
        self.write("checkpoint-1/model-3.safetensors", os.urandom(4096))
        m = self.sync()["manifest"]
        self.assertEqual((m["sync"]["filesUploaded"], m["sync"]["filesReused"]), (1, 2))


if __name__ == "__main__":
    unittest.main()
