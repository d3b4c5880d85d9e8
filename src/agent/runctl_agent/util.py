"""Small helpers shared by every module: times, atomic writes, JSON, sha256, safe paths."""

import hashlib
import json
import os
import shutil
import threading
from datetime import datetime, timezone


def now_iso():
    """UTC now as ISO 8601 with milliseconds and a Z, e.g. 2026-01-01T12:00:05.120Z."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def pad_seq(n):
    """Checkpoint and log segment ids are 8-digit zero-padded so lexical order is numeric order."""
    return "%08d" % n


def atomic_write(path, data):
    """Write bytes to path by temp-then-rename (fsynced), so readers see old or new, never half."""
    tmp = "%s.tmp-%d-%d" % (path, os.getpid(), threading.get_ident())
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def json_bytes(obj):
    """Stable, human-readable JSON bytes (sorted keys, 2-space indent, trailing newline)."""
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8")


def read_json(path):
    """The JSON document at path, or None when it is missing or unreadable."""
    try:
        with open(path, "rb") as f:
            return json.loads(f.read().decode("utf-8"))
    except (OSError, ValueError):
        return None


def read_int(path):
    """The integer stored in a small text file, or None."""
    try:
        with open(path, "r") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def remove_quietly(path):
    """Remove a file or a whole directory tree; missing is fine."""
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
    except OSError:
        pass


def sha256_file(path):
    """Hex sha256 of a file's content, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1024 * 1024), b""):
            h.update(chunk)
    return h.hexdigest()


def safe_relpath(rel):
    """True when rel is a manifest or archive path that stays inside its directory."""
    if not rel or rel.startswith("/") or "\\" in rel:
        return False
    parts = rel.split("/")
    return all(p not in ("", ".", "..") for p in parts)


def list_files(base):
    """Regular files under base, as sorted forward-slash relative paths; symlinks are not followed."""
    out = []
    if not os.path.isdir(base):
        return out
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
        for name in filenames:
            full = os.path.join(dirpath, name)
            if os.path.isfile(full) and not os.path.islink(full):
                out.append(os.path.relpath(full, base).replace(os.sep, "/"))
    out.sort()
    return out
