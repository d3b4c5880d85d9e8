import io
import os
import tarfile
import tempfile
import unittest

from runctl_agent.bundle import safe_extract


def make_tar(path, entries):
    with tarfile.open(path, "w:gz") as tar:
        for name, kind, value in entries:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(value)
                info.mode = 0o755 if name.endswith(".sh") else 0o644
                tar.addfile(info, io.BytesIO(value))
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == "sym":
                info.type = tarfile.SYMTYPE
                info.linkname = value
                tar.addfile(info)


class SafeExtractTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.archive = os.path.join(self.tmp.name, "b.tar.gz")
        self.dest = os.path.join(self.tmp.name, "out")
        os.makedirs(self.dest)

    def tearDown(self):
        self.tmp.cleanup()

    def test_files_dirs_modes_and_inner_symlinks(self):
        make_tar(self.archive, [("d", "dir", None), ("d/run.sh", "file", b"echo"), ("a.txt", "file", b"x"), ("l", "sym", "d/run.sh")])
        self.assertEqual(safe_extract(self.archive, self.dest), 4)
        self.assertEqual(os.stat(os.path.join(self.dest, "d", "run.sh")).st_mode & 0o777, 0o755)
        self.assertEqual(os.readlink(os.path.join(self.dest, "l")), "d/run.sh")

    def test_refuses_escaping_entries(self):
        for entries in ([("../x", "file", b"x")], [("l", "sym", "../../etc/passwd")], [("l", "sym", "/etc/passwd")]):
            make_tar(self.archive, entries)
            with self.assertRaises(ValueError):
                safe_extract(self.archive, self.dest)


if __name__ == "__main__":
    unittest.main()
