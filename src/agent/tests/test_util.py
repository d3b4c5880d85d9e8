import os
import tempfile
import unittest

from runctl_agent import util


class UtilTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def test_safe_relpath_refuses_paths_that_leave_the_folder(self):
        for bad in ("", "/etc/passwd", "../x", "a/../../x", "a//b", "./a", "a/.", "a\\b"):
            self.assertFalse(util.safe_relpath(bad), bad)
        for good in ("a", "a/b.bin", "checkpoint-10/model-00001-of-00004.safetensors", "..a"):
            self.assertTrue(util.safe_relpath(good), good)

    def test_atomic_write_replaces_whole_and_leaves_no_temp(self):
        path = os.path.join(self.dir, "f.json")
        util.atomic_write(path, b"one")
        util.atomic_write(path, b"two")
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"two")
        self.assertEqual(os.listdir(self.dir), ["f.json"])

    def test_read_json_and_read_int_answer_none_for_missing_or_garbage(self):
        path = os.path.join(self.dir, "x")
        self.assertIsNone(util.read_json(path))
        self.assertIsNone(util.read_int(path))
        with open(path, "w") as f:
            f.write("not json")
        self.assertIsNone(util.read_json(path))
        self.assertIsNone(util.read_int(path))
        util.atomic_write(path, util.json_bytes({"b": 1, "a": [2]}))
        self.assertEqual(util.read_json(path), {"a": [2], "b": 1})
        util.atomic_write(path, b" 42\n")
        self.assertEqual(util.read_int(path), 42)

    def test_list_files_is_sorted_relative_and_does_not_follow_symlinks(self):
        os.makedirs(os.path.join(self.dir, "b", "c"))
        for rel in ("z.bin", "b/c/d.bin", "a.bin"):
            with open(os.path.join(self.dir, *rel.split("/")), "wb") as f:
                f.write(b"x")
        os.symlink("z.bin", os.path.join(self.dir, "link"))
        os.symlink("b", os.path.join(self.dir, "dirlink"))
        self.assertEqual(util.list_files(self.dir), ["a.bin", "b/c/d.bin", "z.bin"])
        self.assertEqual(util.list_files(os.path.join(self.dir, "missing")), [])

    def test_sha256_file_matches_hashlib(self):
        import hashlib
        path = os.path.join(self.dir, "f")
        data = os.urandom(3 * 1024 * 1024 + 17)
        with open(path, "wb") as f:
            f.write(data)
        self.assertEqual(util.sha256_file(path), hashlib.sha256(data).hexdigest())

    def test_pad_seq_sorts_numerically(self):
        self.assertEqual(util.pad_seq(7), "00000007")
        self.assertLess(util.pad_seq(9), util.pad_seq(10))


if __name__ == "__main__":
    unittest.main()
