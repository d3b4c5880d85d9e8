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

import hashlib
import os
import shutil
import threading

from .checkpoint_store import FORMAT, MANIFEST_NAME, checkpoints_prefix, contents_prefix, valid_manifest_entries
from .storage import StorageError
from .util import remove_quietly, safe_relpath, sha256_file

RESTORE_THREADS = 8
IN_MEMORY_BYTES = 1024 * 1024  # a content up to this size is fetched, checked and written from memory
BULK_MIN_CONTENTS = 32  # from this many contents on, S3 restores download the contents prefix at once
BULK_MAX_EXCLUDES = 100  # --exclude filters: the CLI tests every object against each one
BULK_EXTRA_BYTES = 64 * 1024 * 1024  # unwanted bytes a bulk download may bring along regardless


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

    def fail(problem):
        with lock:
            failures.append(problem)

    def fetch(sha):
        """Download one content into blobs and check it: a small one in memory (one read of
        storage, one write), a large one to its file, then hashed from there."""
        dest = os.path.join(blobs, sha)
        name = names[sha]
        try:
            if sizes[sha] <= IN_MEMORY_BYTES:
                data = store.storage.get_bytes(store.content_key(sha))
                if data is None:
                    return fail("file %s is missing from storage (content %s)" % (name, sha))
                problem = _check(name, sha, sizes[sha], len(data), hashlib.sha256(data).hexdigest)
                if problem:
                    return fail(problem)
                with open(dest, "wb") as f:
                    f.write(data)
                return
            if not store.storage.get_file(store.content_key(sha), dest):
                return fail("file %s is missing from storage (content %s)" % (name, sha))
            problem = _check(name, sha, sizes[sha], os.path.getsize(dest), lambda: sha256_file(dest))
        except (StorageError, OSError) as e:
            problem = "file %s could not be downloaded: %s" % (name, e)
        if problem:
            fail(problem)

    def check(sha):
        """A content the bulk download brought: check it; fetch it alone when it is not there."""
        dest = os.path.join(blobs, sha)
        try:
            size = os.path.getsize(dest)
        except OSError:
            return fetch(sha)
        problem = _check(names[sha], sha, sizes[sha], size, lambda: sha256_file(dest))
        if problem:
            fail(problem)

    todo = sorted(sizes)
    excludes = None
    if getattr(store.storage, "PROCESS_PER_CALL", False):
        excludes = bulk_excludes(sizes, store.stored_contents())
    if excludes is not None:
        # One AWS CLI process for the whole contents prefix instead of one per content (break9:
        # 10,000 small files = 10,000 CLI starts); contents it does not name are left out by
        # name (the largest), the rest are small and dropped with the scratch folder.
        store.storage.get_tree(contents_prefix(store.prefix), blobs, exclude=excludes)
        work = check
    else:
        work = fetch
    _on_threads(work, todo, threads)
    if failures:
        return sorted(failures)[0]
    tree = os.path.join(scratch, "tree")
    os.makedirs(tree)
    dirs = sorted(manifest.get("dirs") or [], key=lambda d: d["path"])
    for d in dirs:
        os.makedirs(os.path.join(tree, *d["path"].split("/")), exist_ok=True)
    # Counted once: a count per file was O(files²), 20 s of CPU for 10,000 files (break9).
    uses = {}
    for f in files:
        uses[f["sha256"]] = uses.get(f["sha256"], 0) + 1
    made = set()
    for f in files:
        dest = os.path.join(tree, *f["path"].split("/"))
        parent = os.path.dirname(dest)
        if parent not in made:
            os.makedirs(parent, exist_ok=True)
            made.add(parent)
        src = os.path.join(blobs, f["sha256"])
        uses[f["sha256"]] -= 1
        if uses[f["sha256"]] > 0:
            shutil.copyfile(src, dest)  # the same content under several names: the last one takes the blob
        else:
            os.replace(src, dest)
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


def _check(name, sha, expected_size, size, digest):
    """None when a downloaded content has the manifest's size and sha256 (digest() computes it,
    only once the size matched), else the reason."""
    if size != expected_size:
        return "file %s has %d bytes, manifest says %d" % (name, size, expected_size)
    if digest() != sha:
        return "file %s fails its sha256 check" % name
    return None


def _on_threads(work, items, threads):
    """work(item) for every item, on up to `threads` threads each taking the next item from one
    shared list (a future per item cost more than copying a small file)."""
    if not items:
        return
    lock = threading.Lock()
    position = [0]
    errors = []

    def worker():
        while True:
            with lock:
                if position[0] >= len(items):
                    return
                item = items[position[0]]
                position[0] += 1
            try:
                work(item)
            except BaseException as e:  # re-raised in the caller's thread
                with lock:
                    errors.append(e)
                    position[0] = len(items)
                return

    count = max(1, min(threads, len(items)))
    pool = [threading.Thread(target=worker, name="restore-%d" % i, daemon=True) for i in range(count - 1)]
    for t in pool:
        t.start()
    worker()
    for t in pool:
        t.join()
    if errors:
        raise errors[0]


def bulk_excludes(wanted, stored):
    """Whether to download the run's contents prefix with one recursive copy, and what to leave
    out of it: the names to --exclude, or None to fetch each content alone.

    wanted: {sha256: bytes} the checkpoint needs; stored: {sha256: (bytes, time)} what storage
    holds (checkpoint_store.stored_contents). Worth it from BULK_MIN_CONTENTS contents on (each
    call otherwise starts a process); the BULK_MAX_EXCLUDES largest unwanted contents are left
    out by name, and when the unwanted bytes that remain exceed the wanted bytes (and 64 MiB),
    the copy would download more than it saves: None."""
    if len(wanted) < BULK_MIN_CONTENTS:
        return None
    unwanted = sorted(((size, sha) for sha, (size, _t) in stored.items() if sha not in wanted), reverse=True)
    extra = sum(size for size, _sha in unwanted[BULK_MAX_EXCLUDES:])
    if extra > max(sum(wanted.values()), BULK_EXTRA_BYTES):
        return None
    return sorted(sha for _size, sha in unwanted[:BULK_MAX_EXCLUDES])


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
