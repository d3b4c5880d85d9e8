"""Restoring one checkpoint into the job's checkpoint folder, verified, as the tree the job left.

restore_checkpoint(store, generation, cid, target, scratch, threads=RESTORE_THREADS)
    -> (manifest dict, None) when restored, (None, reason) when the checkpoint fails
       verification or download; target is untouched in that case.

Format 2 (checkpoint_store.py): every distinct content is downloaded once, in parallel on a
bounded pool of threads, into scratch; each is checked against its size and sha256; then the
tree (folders with their modes, empty ones too; files with their modes; links that stay inside)
is built in scratch/tree and only then swapped into target. Format 1 (the layout before issue 9:
the files beside MANIFEST.json in <id>/, manifest without "format") is downloaded with one
get_tree and verified the same way, so checkpoints written before the change still restore.
"""

import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor

from .checkpoint_store import FORMAT, MANIFEST_NAME, checkpoints_prefix, valid_manifest_entries
from .storage import StorageError
from .util import remove_quietly, safe_relpath, sha256_file

RESTORE_THREADS = 8


def restore_checkpoint(store, generation, cid, target, scratch, threads=RESTORE_THREADS):
    remove_quietly(scratch)
    os.makedirs(scratch)
    try:
        manifest = store.manifest(generation, cid, cached=False)
        if manifest is None:
            return None, "manifest missing or unreadable"
        if manifest.get("format") == FORMAT:
            reason = _download_v2(store, manifest, scratch, threads)
        else:
            reason = _download_v1(store, generation, cid, manifest, scratch)
        if reason is not None:
            return None, reason
        _swap_in(os.path.join(scratch, "tree"), target)
        return manifest, None
    except StorageError as e:
        return None, "download failed: %s" % e
    finally:
        remove_quietly(scratch)


def _download_v2(store, manifest, scratch, threads):
    reason = valid_manifest_entries(manifest)
    if reason:
        return reason
    files = manifest.get("files") or []
    blobs = os.path.join(scratch, "blobs")
    os.makedirs(blobs)
    sizes = {}
    for f in files:
        sizes[f["sha256"]] = f["size"]
    names = {}
    for f in files:
        names.setdefault(f["sha256"], f["path"])
    failures = []
    lock = threading.Lock()

    def fetch(sha):
        dest = os.path.join(blobs, sha)
        name = names[sha]
        try:
            if not store.storage.get_file(store.content_key(sha), dest):
                problem = "file %s is missing from storage (content %s)" % (name, sha)
            elif os.path.getsize(dest) != sizes[sha]:
                problem = "file %s has %d bytes, manifest says %d" % (name, os.path.getsize(dest), sizes[sha])
            elif sha256_file(dest) != sha:
                problem = "file %s fails its sha256 check" % name
            else:
                return
        except (StorageError, OSError) as e:
            problem = "file %s could not be downloaded: %s" % (name, e)
        with lock:
            failures.append(problem)

    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(sizes) or 1))) as pool:
        list(pool.map(fetch, sorted(sizes)))
    if failures:
        return sorted(failures)[0]
    tree = os.path.join(scratch, "tree")
    os.makedirs(tree)
    dirs = sorted(manifest.get("dirs") or [], key=lambda d: d["path"])
    for d in dirs:
        os.makedirs(os.path.join(tree, *d["path"].split("/")), exist_ok=True)
    placed = set()
    for f in files:
        dest = os.path.join(tree, *f["path"].split("/"))
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        src = os.path.join(blobs, f["sha256"])
        if f["sha256"] in placed or sum(1 for g in files if g["sha256"] == f["sha256"]) > 1:
            shutil.copyfile(src, dest)  # the same content under several names
        else:
            os.replace(src, dest)
        placed.add(f["sha256"])
        if isinstance(f.get("mode"), int):
            os.chmod(dest, f["mode"] & 0o7777)
    for s in manifest.get("symlinks") or []:
        dest = os.path.join(tree, *s["path"].split("/"))
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        os.symlink(s["target"], dest)
    for d in sorted(dirs, key=lambda d: d["path"], reverse=True):  # deepest first: a read-only parent last
        if isinstance(d.get("mode"), int):
            os.chmod(os.path.join(tree, *d["path"].split("/")), d["mode"] & 0o7777)
    return None


def _download_v1(store, generation, cid, manifest, scratch):
    tree = os.path.join(scratch, "tree")
    os.makedirs(tree)
    try:
        files = manifest["files"]
        for f in files:
            if not safe_relpath(f["path"]) or not isinstance(f["size"], int) or not isinstance(f["sha256"], str):
                return "manifest lists an invalid entry %r" % (f.get("path"),)
    except (KeyError, TypeError, AttributeError):
        return "manifest is unreadable"
    # One download of the whole checkpoint (one AWS CLI call).
    store.storage.get_tree(checkpoints_prefix(store.prefix, generation) + cid + "/", tree)
    remove_quietly(os.path.join(tree, MANIFEST_NAME))
    for f in files:
        path = os.path.join(tree, *f["path"].split("/"))
        if not os.path.isfile(path):
            return "file %s is missing" % f["path"]
        size = os.path.getsize(path)
        if size != f["size"]:
            return "file %s has %d bytes, manifest says %d" % (f["path"], size, f["size"])
        if sha256_file(path) != f["sha256"]:
            return "file %s fails its sha256 check" % f["path"]
    listed = set(f["path"] for f in files)
    for dirpath, _dirs, names in os.walk(tree):
        for name in names:
            rel = os.path.relpath(os.path.join(dirpath, name), tree).replace(os.sep, "/")
            if rel not in listed:
                os.unlink(os.path.join(dirpath, name))  # stray files a crashed writer left
    return None


def _swap_in(tree, target):
    """Replace target's contents with tree's (same filesystem: renames; else copies)."""
    os.makedirs(target, exist_ok=True)
    for name in os.listdir(target):
        remove_quietly(os.path.join(target, name))
    for name in sorted(os.listdir(tree)):
        shutil.move(os.path.join(tree, name), os.path.join(target, name))
