"""The setup cache on its own (issue 12): the key, a save and a restore through file:// storage,
a virtualenv-shaped tree (modes, relative and absolute symlinks, its own absolute path in text
files) moved to another workDir, and every way a stored cache can be unusable."""

import io
import json
import os
import tarfile
import tempfile
import unittest

from runctl_agent.setup_cache import CacheUnavailable, SetupCache, archive_key, entry_key
from runctl_agent.storage import FileStorage


class SetupCacheTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.root = self.tmp.name
        self.storage = FileStorage("file://" + os.path.join(self.root, "storage"))

    def tearDown(self):
        self.tmp.cleanup()

    def attempt(self, n, requirements="torch==2.4\n", setup="bash setup.sh", image="ami-0123456789abcdef0"):
        work = os.path.join(self.root, "a%d" % n, "work")
        state = os.path.join(self.root, "a%d" % n, "state")
        for d in (work, state):
            os.makedirs(d, exist_ok=True)
        with open(os.path.join(work, "requirements.txt"), "w") as f:
            f.write(requirements)
        cfg = {"run": "gpt", "generation": 1, "attempt": n, "workDir": work, "stateDir": state, "imdsUrl": "http://127.0.0.1:9",
               "setup": setup, "setupCache": {"paths": [".venv", "data/tokens.bin"], "key": ["requirements.txt"]}}
        return SetupCache(cfg, self.storage, lambda _m: None, image=image, arch="x86_64"), work

    def build_venv(self, work):
        venv = os.path.join(work, ".venv")
        os.makedirs(os.path.join(venv, "bin"))
        os.makedirs(os.path.join(venv, "lib", "site-packages", "pkg"))
        with open(os.path.join(venv, "bin", "pip"), "w") as f:
            f.write("#!%s/.venv/bin/python\nimport pip\n" % work)
        os.chmod(os.path.join(venv, "bin", "pip"), 0o755)
        with open(os.path.join(venv, "bin", "activate"), "w") as f:
            f.write('VIRTUAL_ENV="%s/.venv"\nexport VIRTUAL_ENV\n' % work)
        os.symlink("/usr/bin/python3", os.path.join(venv, "bin", "python"))  # absolute, outside: a venv's own
        os.symlink("lib", os.path.join(venv, "lib64"))
        os.symlink(os.path.join(work, ".venv", "bin", "python"), os.path.join(venv, "bin", "python3"))
        with open(os.path.join(venv, "lib", "site-packages", "pkg", "_native.so"), "wb") as f:
            f.write(b"\x7fELF\0\0" + work.encode() + b"\0")  # binary: left as it is
        os.makedirs(os.path.join(work, "data"))
        with open(os.path.join(work, "data", "tokens.bin"), "wb") as f:
            f.write(b"\1\2\3")

    def test_key_depends_on_command_key_files_image_and_arch(self):
        cache, work = self.attempt(1)
        key, inputs = cache.key()
        self.assertEqual(inputs["keyFiles"][0]["path"], "requirements.txt")
        self.assertEqual(cache.key()[0], key)
        self.assertNotEqual(self.attempt(2, requirements="torch==2.5\n")[0].key()[0], key)
        self.assertNotEqual(self.attempt(3, setup="bash setup.sh --cuda")[0].key()[0], key)
        self.assertNotEqual(self.attempt(4, image="ami-0fedcba9876543210")[0].key()[0], key)
        other, _ = self.attempt(5)
        other.arch = "aarch64"
        self.assertNotEqual(other.key()[0], key)
        os.unlink(os.path.join(work, "requirements.txt"))
        with self.assertRaises(CacheUnavailable) as err:
            cache.key()
        self.assertIn("requirements.txt is not in the code bundle", str(err.exception))

    def test_save_then_restore_in_another_work_dir(self):
        first, work1 = self.attempt(1)
        self.build_venv(work1)
        key, inputs = first.key()
        self.assertEqual(first.restore(key)["result"], "miss")
        saved = first.save(key, inputs, 42.5)
        self.assertTrue(saved["stored"])
        entry = json.loads(self.storage.get_bytes(entry_key(key)).decode())
        self.assertEqual(entry["setupSeconds"], 42.5)
        self.assertEqual(entry["paths"], [".venv", "data/tokens.bin"])

        second, work2 = self.attempt(2)
        self.assertEqual(second.key()[0], key)
        report = second.restore(key)
        self.assertEqual(report["result"], "restored", report)
        self.assertEqual(report["setupSeconds"], 42.5)
        self.assertAlmostEqual(report["savedSeconds"], 42.5 - report["seconds"], places=1)
        self.assertEqual(report["builtBy"], {"run": "gpt", "generation": 1, "attempt": 1})
        venv = os.path.join(work2, ".venv")
        self.assertEqual(os.readlink(os.path.join(venv, "bin", "python")), "/usr/bin/python3")
        self.assertEqual(os.readlink(os.path.join(venv, "lib64")), "lib")
        self.assertEqual(os.readlink(os.path.join(venv, "bin", "python3")), os.path.join(work2, ".venv", "bin", "python"))
        self.assertEqual(os.stat(os.path.join(venv, "bin", "pip")).st_mode & 0o777, 0o755)
        with open(os.path.join(venv, "bin", "pip")) as f:
            self.assertEqual(f.readline(), "#!%s/.venv/bin/python\n" % work2)
        with open(os.path.join(venv, "bin", "activate")) as f:
            self.assertIn('VIRTUAL_ENV="%s/.venv"' % work2, f.read())
        with open(os.path.join(venv, "lib", "site-packages", "pkg", "_native.so"), "rb") as f:
            self.assertIn(work1.encode(), f.read())
        with open(os.path.join(work2, "data", "tokens.bin"), "rb") as f:
            self.assertEqual(f.read(), b"\1\2\3")
        self.assertEqual(report["relocatedFiles"], 3)
        self.assertFalse(os.path.exists(os.path.join(work2, ".runctl-setup-restore")))

    def test_corrupt_or_missing_archive_and_bad_entry_leave_work_dir_alone(self):
        first, work1 = self.attempt(1)
        self.build_venv(work1)
        key, inputs = first.key()
        sha = first.save(key, inputs, 10)["archive"]
        second, work2 = self.attempt(2)
        archive = self.storage.local_path(archive_key(sha))
        with open(archive, "r+b") as f:
            f.seek(100)
            f.write(b"garbage")
        report = second.restore(key)
        self.assertEqual(report["result"], "corrupt")
        self.assertIn("is corrupt: its content hashes to", report["reason"])
        self.assertFalse(os.path.exists(os.path.join(work2, ".venv")))
        os.unlink(archive)
        report = second.restore(key)
        self.assertEqual(report["result"], "missing")
        self.assertIn("missing from storage", report["reason"])
        self.storage.put_bytes(entry_key(key), b"{not json")
        self.assertEqual(second.restore(key)["result"], "corrupt")
        self.assertEqual(os.listdir(work2), ["requirements.txt"])

    def test_refuses_entries_outside_the_cached_paths_and_writes_through_links(self):
        first, _ = self.attempt(1)
        key, _inputs = first.key()
        for entries in ([("etc/passwd", "file", b"x")],
                        [(".venv", "dir", None), (".venv/up", "sym", "/etc"), (".venv/up/passwd", "file", b"x")],
                        [("../escape", "file", b"x")]):
            buf = os.path.join(self.root, "evil.tar.gz")
            with tarfile.open(buf, "w:gz") as tar:
                for name, kind, value in entries:
                    info = tarfile.TarInfo(name)
                    if kind == "file":
                        info.size = len(value)
                        tar.addfile(info, io.BytesIO(value))
                    elif kind == "dir":
                        info.type = tarfile.DIRTYPE
                        tar.addfile(info)
                    else:
                        info.type = tarfile.SYMTYPE
                        info.linkname = value
                        tar.addfile(info)
            from runctl_agent.util import sha256_file
            sha = sha256_file(buf)
            self.storage.put_file(archive_key(sha), buf)
            self.storage.put_bytes(entry_key(key), json.dumps({"format": 1, "key": key, "archive": {"sha256": sha, "bytes": 1}}).encode())
            second, work2 = self.attempt(2)
            report = second.restore(key)
            self.assertEqual(report["result"], "corrupt", report)
            self.assertEqual(sorted(os.listdir(work2)), ["requirements.txt"])
        self.assertFalse(os.path.exists(os.path.join(self.root, "a2", "escape")))


if __name__ == "__main__":
    unittest.main()
