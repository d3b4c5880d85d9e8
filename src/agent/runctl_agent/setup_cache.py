"""The setup cache (issue 12): what `setup` builds, kept in storage and restored instead of running
setup again, on a later attempt or generation (or another run) whose key is the same.

Layout (keys relative to the storage root, beside bundles/; see src/agent/layout.ts):

    setup-cache/<key>.json                   the entry, written last: a key without it is a miss
    setup-cache/archives/<sha256>.tar.gz     the archive, named by the sha256 of its bytes

key = sha256 of the canonical JSON of {format, command (the setup command), paths, keyFiles
(path and sha256 of each key file's content), image, arch}. image is the instance's AMI id from
IMDS (`meta-data/ami-id`); where the metadata service has none (the local provider, the fleet
simulator) it is the host's OS release and python version, which decide a virtualenv just as the
AMI does on EC2. arch is `uname -m` (platform.machine()).

Entry: {"format": 1, "key", "archive": {"sha256", "bytes"}, "paths": [stored paths],
        "setupSeconds" (how long the setup it replaces took), "workDir" (where it was built),
        "createdAt", "run", "generation", "attempt", "image", "arch"}

The archive is a tar.gz of `paths` (relative to workDir) keeping modes and symlinks (a virtualenv's
bin/python is an absolute link to the system python: allowed here, unlike in a code bundle,
because the archive is the run's own output, checked against its sha256). Restoring never writes
outside workDir: entry names are relative and below one of the cached paths, nothing is written
through a symlink, and the paths are moved into place only once the whole archive is unpacked.

A venv holds its absolute path (script shebangs, bin/activate, editable-install .pth files) and
each attempt has its own workDir; so when the entry was built elsewhere, text files (no NUL byte,
at most REWRITE_MAX_BYTES) and symlink targets that contain the old workDir get the new one, as
conda-pack's conda-unpack does.

Nothing here fails the attempt: a missing, corrupt or unreadable cache is a reason to run setup
(said in the status, the job log and the controller's event), and a failed save is said the same
way.
"""

import hashlib
import json
import os
import platform
import shutil
import tarfile
import time
import zlib

from .imds import Imds
from .storage import StorageError
from .util import now_iso, read_json, remove_quietly, safe_relpath, sha256_file

FORMAT = 1
CACHE_PREFIX = "setup-cache/"
ARCHIVES_PREFIX = CACHE_PREFIX + "archives/"
REWRITE_MAX_BYTES = 4 * 1024 * 1024
# gzip level 1: a PyTorch virtualenv is gigabytes; level 1 compresses most of what level 9 does
# at several times the speed, and the archive is written on the instance while the job waits.
COMPRESS_LEVEL = 1


class CacheUnavailable(Exception):
    """The cache cannot be used for this attempt (a key file missing, ...); setup runs."""


def entry_key(key):
    return "%s%s.json" % (CACHE_PREFIX, key)


def archive_key(sha):
    return "%s%s.tar.gz" % (ARCHIVES_PREFIX, sha)


def normalize(rel):
    return "/".join(p for p in rel.split("/") if p not in ("", "."))


def host_image():
    """The local equivalent of an AMI id: the OS release and the python version."""
    release = {}
    try:
        with open("/etc/os-release") as f:
            for line in f:
                k, _, v = line.strip().partition("=")
                release[k] = v.strip('"')
    except OSError:
        pass
    return "host:%s-%s python-%s" % (release.get("ID", platform.system().lower()), release.get("VERSION_ID", platform.release()),
                                    platform.python_version())


def instance_image(imds_url, log):
    """The AMI id from IMDS (meta-data/ami-id), or host_image() where the metadata service has none."""
    imds = Imds(imds_url, log)
    try:
        code, body = imds._get("/latest/meta-data/ami-id")
        if code == 200 and body.strip():
            return body.decode("ascii", "replace").strip()
    except Exception:  # unreachable metadata service: the host decides, as on the local provider
        pass
    return host_image()


class SetupCache(object):
    """The setup cache of one attempt. cfg: AgentConfig (setup, setupCache, workDir, stateDir,
    imdsUrl, run, generation, attempt); storage: a backend (storage.py); log(message)."""

    def __init__(self, cfg, storage, log, image=None, arch=None):
        self.cfg = cfg
        self.storage = storage
        self.log = log
        self.work = cfg["workDir"]
        self.paths = [normalize(p) for p in cfg["setupCache"]["paths"]]
        self.key_files = [normalize(p) for p in cfg["setupCache"]["key"]]
        self._image = image
        self.arch = arch or platform.machine()
        self.download = os.path.join(cfg["stateDir"], "setup-cache.tar.gz")

    @property
    def image(self):
        if self._image is None:
            self._image = instance_image(self.cfg["imdsUrl"], self.log)
        return self._image

    def key(self):
        """(key hex, inputs). Raises CacheUnavailable when a key file cannot be read."""
        files = []
        for rel in self.key_files:
            path = os.path.join(self.work, *rel.split("/"))
            if not safe_relpath(rel) or not os.path.isfile(path):
                raise CacheUnavailable("the setup cache key file %s is not in the code bundle (it must be a file under code.path that "
                                       "the bundle ships: check .gitignore and code.exclude)" % rel)
            try:
                files.append({"path": rel, "sha256": sha256_file(path)})
            except OSError as e:
                raise CacheUnavailable("cannot read the setup cache key file %s: %s" % (rel, e))
        inputs = {"format": FORMAT, "command": self.cfg["setup"], "paths": sorted(self.paths), "keyFiles": files,
                  "image": self.image, "arch": self.arch}
        canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":")).encode("utf-8")
        return hashlib.sha256(canonical).hexdigest(), inputs

    # -- restore
    def restore(self, key):
        """Restore the entry stored under key into workDir. Returns a report dict: result
        "restored" (seconds, setupSeconds, savedSeconds, bytes, builtBy) or "miss" / "corrupt" /
        "unavailable" with a reason; on anything but "restored" workDir is as it was."""
        started = time.monotonic()
        try:
            raw = self.storage.get_bytes(entry_key(key))
        except (StorageError, OSError) as e:
            return {"result": "unavailable", "reason": "cannot read the setup cache entry %s: %s" % (entry_key(key), e)}
        if raw is None:
            return {"result": "miss", "reason": "no setup cache stored for key %s yet (first setup with this command, key files, image and "
                                                "architecture)" % key[:12]}
        try:
            entry = json.loads(raw.decode("utf-8"))
            sha = entry["archive"]["sha256"]
            if entry.get("format") != FORMAT or entry.get("key") != key or not isinstance(sha, str) or len(sha) != 64:
                raise ValueError("unexpected fields")
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as e:
            return {"result": "corrupt", "reason": "the setup cache entry %s is not valid (%s)" % (entry_key(key), e)}
        remove_quietly(self.download)
        try:
            found = self.storage.get_file(archive_key(sha), self.download)
        except (StorageError, OSError) as e:
            return {"result": "unavailable", "reason": "cannot download the setup cache archive %s: %s" % (archive_key(sha), e)}
        if not found:
            return {"result": "missing", "reason": "the setup cache archive %s is missing from storage" % archive_key(sha)}
        try:
            actual = sha256_file(self.download)
            if actual != sha:
                return {"result": "corrupt", "reason": "the setup cache archive %s is corrupt: its content hashes to %s" % (
                    archive_key(sha), actual)}
            size = os.path.getsize(self.download)
            rewritten = self.unpack(self.download, entry.get("workDir"))
        except (tarfile.TarError, ValueError, OSError, EOFError, zlib.error) as e:
            return {"result": "corrupt", "reason": "cannot unpack the setup cache archive %s: %s" % (archive_key(sha), e)}
        finally:
            remove_quietly(self.download)
        seconds = round(time.monotonic() - started, 2)
        setup_seconds = entry.get("setupSeconds") if isinstance(entry.get("setupSeconds"), (int, float)) else None
        report = {"result": "restored", "seconds": seconds, "bytes": size, "archive": sha}
        if setup_seconds is not None:
            report["setupSeconds"] = round(setup_seconds, 2)
            report["savedSeconds"] = round(max(0.0, setup_seconds - seconds), 2)
        built = {k: entry[k] for k in ("run", "generation", "attempt") if k in entry}
        if built:
            report["builtBy"] = built
        if rewritten:
            report["relocatedFiles"] = rewritten
        return report

    def unpack(self, archive, built_in):
        """Unpack into a staging folder inside workDir, then move each cached path into place.
        Returns the number of files whose built-in workDir was rewritten. Raises ValueError for
        an entry that would land outside its cached path."""
        staging = os.path.join(self.work, ".runctl-setup-restore")
        remove_quietly(staging)
        os.makedirs(staging)
        old = built_in.rstrip("/").encode("utf-8") if isinstance(built_in, str) and built_in.rstrip("/") != self.work.rstrip("/") else None
        new = self.work.rstrip("/").encode("utf-8")
        rewritten = 0
        dir_modes = []
        try:
            with tarfile.open(archive, "r:gz") as tar:
                for member in tar:
                    name = normalize(member.name)
                    if not safe_relpath(name) or not any(name == p or name.startswith(p + "/") for p in self.paths):
                        raise ValueError("entry %r is not inside a cached path" % member.name)
                    target = os.path.join(staging, *name.split("/"))
                    self._no_links_between(staging, name)
                    if member.isdir():
                        os.makedirs(target, exist_ok=True)
                        dir_modes.append((target, member.mode & 0o7777))
                    elif member.isfile():
                        os.makedirs(os.path.dirname(target), exist_ok=True)
                        with tar.extractfile(member) as fin:
                            if old is not None and member.size <= REWRITE_MAX_BYTES:
                                data = fin.read()
                                if b"\0" not in data and old in data:
                                    data = data.replace(old, new)
                                    rewritten += 1
                                with open(target, "wb") as fout:
                                    fout.write(data)
                            else:
                                with open(target, "wb") as fout:
                                    shutil.copyfileobj(fin, fout, 1024 * 1024)
                        os.chmod(target, member.mode & 0o7777)
                    elif member.issym():
                        os.makedirs(os.path.dirname(target), exist_ok=True)
                        link = member.linkname
                        if old is not None and (link == old.decode("utf-8") or link.startswith(old.decode("utf-8") + "/")):
                            link = new.decode("utf-8") + link[len(old.decode("utf-8")):]
                            rewritten += 1
                        os.symlink(link, target)
                    elif member.islnk():
                        source = normalize(member.linkname)
                        if not safe_relpath(source):
                            raise ValueError("hard link %r points outside the archive" % member.name)
                        self._no_links_between(staging, source)
                        os.makedirs(os.path.dirname(target), exist_ok=True)
                        os.link(os.path.join(staging, *source.split("/")), target)
                    # devices and fifos: not something setup leaves for training
            for path, mode in reversed(dir_modes):
                os.chmod(path, mode | 0o700)
            for rel in self.paths:
                src = os.path.join(staging, *rel.split("/"))
                if not os.path.lexists(src):
                    continue
                dest = os.path.join(self.work, *rel.split("/"))
                remove_quietly(dest)
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                os.rename(src, dest)
        finally:
            remove_quietly(staging)
        return rewritten

    @staticmethod
    def _no_links_between(root, rel):
        """Raise ValueError when a folder on the way to rel (below root) is a symlink: an archive
        holding `a -> /etc` and then `a/passwd` must not write through the link."""
        parts = rel.split("/")[:-1]
        path = root
        for part in parts:
            path = os.path.join(path, part)
            if os.path.islink(path):
                raise ValueError("entry %r would be written through the symlink %s" % (rel, part))

    # -- save
    def save(self, key, inputs, setup_seconds):
        """Archive the cached paths and store them under key (archive first, entry last). Returns
        a report dict: stored (bool), bytes, archiveSeconds, and missing (paths setup did not
        create). Raises StorageError/OSError when it cannot be stored."""
        started = time.monotonic()
        present = [p for p in self.paths if os.path.lexists(os.path.join(self.work, *p.split("/")))]
        missing = [p for p in self.paths if p not in present]
        if not present:
            return {"stored": False, "missing": missing, "error": "setup created none of the cached paths (%s)" % ", ".join(self.paths)}
        tmp = os.path.join(self.cfg["stateDir"], "setup-cache.new.tar.gz")
        remove_quietly(tmp)
        try:
            with tarfile.open(tmp, "w:gz", compresslevel=COMPRESS_LEVEL) as tar:
                for rel in sorted(present):
                    tar.add(os.path.join(self.work, *rel.split("/")), arcname=rel, recursive=True, filter=_owner_neutral)
            sha = sha256_file(tmp)
            size = os.path.getsize(tmp)
            self.storage.put_file(archive_key(sha), tmp)
        finally:
            remove_quietly(tmp)
        entry = {"format": FORMAT, "key": key, "archive": {"sha256": sha, "bytes": size}, "paths": sorted(present),
                 "setupSeconds": round(setup_seconds, 2), "workDir": self.work, "createdAt": now_iso(),
                 "run": self.cfg["run"], "generation": self.cfg["generation"], "attempt": self.cfg["attempt"],
                 "image": inputs["image"], "arch": inputs["arch"]}
        self.storage.put_bytes(entry_key(key), (json.dumps(entry, indent=2, sort_keys=True) + "\n").encode("utf-8"))
        report = {"stored": True, "bytes": size, "archive": sha, "archiveSeconds": round(time.monotonic() - started, 2)}
        if missing:
            report["missing"] = missing
        return report


def _owner_neutral(info):
    """Archive entries without the building user's names (restored files belong to whoever restores)."""
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def read_outcome(state_dir):
    """The setup cache report an earlier agent of this attempt recorded, or None."""
    return read_json(os.path.join(state_dir, "setup-cache.json"))
