import os
import tempfile
import unittest

from runctl_agent.storage import FileStorage, StorageError


class FileStorageTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.s = FileStorage("file://" + self.tmp.name + "/root")

    def tearDown(self):
        self.tmp.cleanup()

    def test_put_get_list_delete(self):
        self.s.put_bytes("a/b/c.json", b"{}")
        src = os.path.join(self.tmp.name, "f")
        with open(src, "wb") as f:
            f.write(b"data")
        self.s.put_file("a/d.bin", src)
        self.assertEqual(self.s.get_bytes("a/b/c.json"), b"{}")
        self.assertIsNone(self.s.get_bytes("a/none"))
        self.assertEqual(self.s.list_keys("a/"), ["b/c.json", "d.bin"])
        dest = os.path.join(self.tmp.name, "g")
        self.assertTrue(self.s.get_file("a/d.bin", dest))
        self.assertFalse(self.s.get_file("a/none", dest))
        self.s.delete("a/d.bin")
        self.s.delete("a/d.bin")
        self.s.delete_prefix("a/b/")
        self.assertEqual(self.s.list_keys("a/"), [])

    def test_list_leaves_out_writers_temp_files(self):
        self.s.put_bytes("p/x", b"1")
        with open(os.path.join(self.tmp.name, "root", "p", "y.tmp-123"), "wb") as f:
            f.write(b"half")
        self.assertEqual(self.s.list_keys("p/"), ["x"])

    def test_refuses_keys_that_leave_the_root(self):
        with self.assertRaises(StorageError):
            self.s.put_bytes("../escape", b"x")


if __name__ == "__main__":
    unittest.main()
