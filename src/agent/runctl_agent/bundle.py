"""Code bundles: download `bundles/<sha256>.tar.gz`, check it against the sha256 in its name (of
the uncompressed tar stream, see src/agent/bundle.ts), and unpack it into workDir refusing any
entry that would land outside it."""

import gzip
import hashlib
import os
import re
import shutil
import tarfile

from .errors import AgentFailure
from .storage import StorageError
from .util import remove_quietly, safe_relpath


def tar_stream_sha256(archive):
    """Bundles are named after the sha256 of their uncompressed tar stream (gzip bytes vary by zlib)."""
    h = hashlib.sha256()
    with gzip.open(archive, "rb") as f:
        for chunk in iter(lambda: f.read(1024 * 1024), b""):
            h.update(chunk)
    return h.hexdigest()


def safe_extract(archive, dest):
    """Extract a .tar.gz into dest: files (mode 0644/0755), folders, and symlinks that stay inside.
    Returns the number of entries written. Raises ValueError for an entry leaving dest."""
    count = 0
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            name = member.name.rstrip("/")
            if name in ("", "."):
                continue
            if name.startswith("./"):
                name = name[2:]
            if not safe_relpath(name):
                raise ValueError("entry %r would land outside the work directory" % member.name)
            target = os.path.join(dest, *name.split("/"))
            if member.isdir():
                os.makedirs(target, exist_ok=True)
            elif member.isfile():
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with tar.extractfile(member) as fin, open(target, "wb") as fout:
                    shutil.copyfileobj(fin, fout)
                os.chmod(target, 0o755 if member.mode & 0o111 else 0o644)
            elif member.issym():
                resolved = os.path.normpath(os.path.join(os.path.dirname(name), member.linkname))
                if os.path.isabs(member.linkname) or resolved == ".." or resolved.startswith("../"):
                    raise ValueError("symlink %r points outside the work directory" % member.name)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.symlink(member.linkname, target)
            else:
                continue  # hard links, devices and fifos have no place in a code bundle
            count += 1
    return count


def fetch_bundle(storage, key, work, archive, storage_url, log):
    """Make `work` hold bundle `key` (skipped when work/.runctl-bundle already names it): download
    to `archive`, verify, unpack beside work, then swap it in by rename. Raises AgentFailure."""
    marker = os.path.join(work, ".runctl-bundle")
    try:
        with open(marker) as f:
            if f.read().strip() == key:
                log("bundle %s already unpacked in %s" % (key, work))
                return
    except OSError:
        pass
    log("downloading bundle %s" % key)
    try:
        found = storage.get_file(key, archive)
    except StorageError as e:
        raise AgentFailure("cannot download code bundle %s: %s" % (key, e))
    if not found:
        raise AgentFailure("code bundle %s not found in %s" % (key, storage_url))
    expected = re.match(r"^bundles/([0-9a-f]{64})\.tar\.gz$", key)
    if expected:
        actual = tar_stream_sha256(archive)
        if actual != expected.group(1):
            raise AgentFailure("code bundle %s is corrupt: its content hashes to %s" % (key, actual))
    parent = os.path.dirname(work.rstrip("/")) or "/"
    os.makedirs(parent, exist_ok=True)
    staging = "%s.unpack-%d" % (work.rstrip("/"), os.getpid())
    remove_quietly(staging)
    os.makedirs(staging)
    try:
        count = safe_extract(archive, staging)
    except (tarfile.TarError, OSError, ValueError) as e:
        remove_quietly(staging)
        raise AgentFailure("cannot unpack code bundle %s: %s" % (key, e))
    with open(os.path.join(staging, ".runctl-bundle"), "w") as f:
        f.write(key + "\n")
    if os.path.lexists(work):
        old = "%s.old-%d" % (work.rstrip("/"), os.getpid())
        os.rename(work, old)
        remove_quietly(old)
    os.rename(staging, work)
    remove_quietly(archive)
    log("unpacked %d entries of %s into %s" % (count, key, work))
