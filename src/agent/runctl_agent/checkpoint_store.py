"""Content-addressed checkpoint storage (issue 9): each distinct file content is stored once per
run, keyed by its sha256; a checkpoint is a manifest, published last, naming its entries.

Layout (keys relative to the storage root; see src/agent/layout.ts):

    runs/<run>/checkpoint-contents/<sha256>               one object per distinct content, per run
    runs/<run>/g<gen>/checkpoints/<8-digit id>/MANIFEST.json   the checkpoint (format 2), written last
    runs/<run>/checkpoint-retired/g<gen>-<id>.json       tombstone of a retired manifest (its sha256s)

Manifest, format 2 (format-1 manifests, with the files stored beside them in <id>/, still
restore: checkpoint_restore.py):

    {"format": 2, "id", "run", "generation", "attempt", "createdAt", "step"?: int,
     "files":    [{"path", "size" (bytes), "sha256", "mode" (permission bits, int)}],
     "dirs":     [{"path", "mode"}],            every folder below the root, empty ones included
     "symlinks": [{"path", "target"}],          links that stay inside the folder, target as written
     "sync": {"filesUploaded", "filesReused", "bytesUploaded", "bytesReused"}}

API for the capture layer (the code that decides WHICH files and WHEN):

    store = CheckpointStore(storage, run, generation, attempt, state_dir, log, grace_seconds=3600)
    session = store.begin()                    # reuse rules from store.current_view() (listed once)
    result = session.add_files(root, entries)  # entries: [checkpoint_tree.FileEntry] from scan_tree
        -> {"accepted": [file entry dicts], "rejected": [{"path", "reason"}], "vanished": [paths deleted meanwhile]}
    manifest = session.publish(files, dirs, symlinks, step=None)   # -> the manifest dict
    store.retain(keep)                          # retire old manifests, collect unreferenced contents (when due)

  or, for a whole folder at once:
    store.sync_tree(root, tree, step=None, require_all=True, only=None)
        -> {"manifest": dict or None, "accepted": [...], "rejected": [...], "refused": [...],
            "unchanged": bool}

  add_files snapshots one file at a time, so the extra disk it uses on the instance is at most
  the largest new file (zero for file:// storage, where the copy goes straight into the store's
  temp name and is renamed into place): a file whose identity (size, mtime_ns, inode, device,
  ctime_ns; checkpoint_tree.FileEntry) matches what the local index recorded for a content
  already stored is reused without being read; otherwise it is copied while hashed, then its
  identity is checked again: changed = rejected ("changed while it was copied"), never stored
  under a wrong hash. The ctime is part of it because a job's `cp -p` or `rsync -a` rewrites a
  file and then sets its old mtime back; only the kernel sets the ctime. A content already
  stored (and protected, below) is never uploaded again.

Retention and concurrency (why nothing a kept manifest names is ever deleted):
- Within one agent, sync and retention run under one lock (checkpoints.Checkpoints).
- Across agents (an interrupted attempt's final sync can overlap the next attempt's syncs), the
  rule is a grace period G (`grace_seconds`, default 1 h) plus tombstones instead of a lock
  (S3 has no lock the AWS CLI can take on every image):
  * retiring a manifest first writes its tombstone (its sha256s, the time), then deletes it;
  * a content is deleted only when no live manifest (of any generation of the run) and no
    tombstone younger than G names it, and its stored time is older than G before the
    collector read the manifests. Manifests are read before tombstones (a manifest deleted
    before the read left its tombstone before it);
  * a sync reuses a stored content only when a live manifest it listed names it, or it was
    stored less than G/2 ago; anything else is uploaded again (which renews its time);
  * a sync publishes within G/2 of its listing, or lists again and re-adds what is no longer
    protected. So every content a new manifest names is protected until that manifest is
    visible to every collector;
  * a listing is kept (current_view) and updated by this store's own writes for at most G/4, so
    a sync in steady state lists nothing; a collection runs at most every G/4 (nothing is
    deletable before it is G old).
- A crash at any instant leaves: uploaded contents without a manifest (collected later), a
  tombstone beside a live manifest (the manifest still protects), or a partly done collection
  (redone by the next one). A manifest is one atomic write, published after all its contents.
- grace_seconds=0 turns the protection off (a single writer only: tests and benches).

Kill points for tests: RUNCTL_AGENT_KILL_AFTER_OPS=N SIGKILLs the process just before its
(N+1)-th storage mutation (content write, manifest write, tombstone write, delete); the count is
kept in stateDir/store-ops. Nothing in production sets it.
"""

import hashlib
import itertools
import json
import os
import re
import shutil
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from .checkpoint_tree import FileEntry
from .storage import FileStorage, StorageError
from .util import atomic_write, json_bytes, now_iso, pad_seq, read_int, remove_quietly, safe_relpath

MANIFEST_NAME = "MANIFEST.json"
FORMAT = 2
DEFAULT_GRACE_SECONDS = 3600.0
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
COPY_CHUNK = 1024 * 1024
HASH_FIRST_BELOW = 8 * 1024 * 1024  # file:// files of a stored size below this are hashed before any copy
PARALLEL_COPY_FROM = 1024 * 1024  # file:// files from this size are copied and hashed at once, in two threads
READ_WORKERS = 4  # files read (hashed, copied) at once by one sync
# A file renamed into place is reused by its identity from this size: a small file deleted and
# another created at once could get its inode, size and timestamp; a large one takes longer to write.
RENAMED_REUSE_FROM = 1024 * 1024
TEMP_SEQ = itertools.count()  # unique temp names for the copies running at once


def contents_prefix(run_prefix):
    """run_prefix: the run incarnation's prefix, runs/<run>/<uid> (or runs/<run>: config.run_prefix)."""
    return "%s/checkpoint-contents/" % run_prefix


def retired_prefix(run_prefix):
    return "%s/checkpoint-retired/" % run_prefix


def checkpoints_prefix(run_prefix, generation):
    return "%s/g%d/checkpoints/" % (run_prefix, generation)


def manifest_shas(manifest):
    """The sha256s a format-2 manifest references (empty for format 1: its files live beside it)."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return set()
    return set(f["sha256"] for f in manifest.get("files") or [] if isinstance(f, dict) and isinstance(f.get("sha256"), str))


class KillSwitch(object):
    """Counts storage mutations; SIGKILLs this process before the one after RUNCTL_AGENT_KILL_AFTER_OPS."""

    def __init__(self, state_dir):
        limit = os.environ.get("RUNCTL_AGENT_KILL_AFTER_OPS")
        self.limit = int(limit) if limit not in (None, "") else None
        self.path = os.path.join(state_dir, "store-ops")
        self.lock = threading.Lock()  # files are copied on several threads

    def __call__(self, what):
        if self.limit is None:
            return
        with self.lock:
            self._count()

    def _count(self):
        done = (read_int(self.path) or 0)
        if done >= self.limit:
            os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(10)  # never returns
        with open(self.path, "w") as f:
            f.write("%d\n" % (done + 1))


class CheckpointStore(object):
    """The content-addressed checkpoints of one run, as seen by one attempt.

    storage: a storage backend (storage.py); run, generation, attempt: the attempt's key;
    state_dir: the agent's stateDir (the local index lives there); log(message): agent log;
    grace_seconds: G above (seconds). Raises StorageError from the backend.
    """

    def __init__(self, storage, run, generation, attempt, state_dir, log, grace_seconds=DEFAULT_GRACE_SECONDS, run_prefix=None):
        self.storage = storage
        self.run = run
        self.prefix = run_prefix or "runs/%s" % run
        self.generation = generation
        self.attempt = attempt
        self.state_dir = state_dir
        self.log = log
        self.grace = float(grace_seconds)
        self.kill = KillSwitch(state_dir)
        self.manifests = {}  # (generation, id) -> manifest; published manifests never change
        self.tombstones = {}  # key -> tombstone doc
        self.collected_once = False
        self.last_collect = None  # time.time() of this store's last collection
        self.collect_pending = False  # a collection stopped early (should_yield) or not run yet
        self.yielded = False  # the last retain or collect stopped early for a waiting save
        self.view = None  # what this store knows of storage: current_view()
        self.uploaded_at = {}  # sha256 -> (size, time.time() before its upload began), by this store
        # Contents this store uploaded that no manifest it published names yet: a save stored
        # ahead of its declaration (Checkpoints.stage) or held back. Its manifest counts them as
        # uploaded, and a collection with G = 0 leaves them alone until then.
        self.unpublished = set()
        self.bytes_written = 0  # bytes this store wrote to storage (contents, rejected copies, manifests), for benches
        # Two sessions may run at once: a save's files stored ahead on the stager's thread while a
        # sync publishes (Checkpoints.stage). books guards what both change (uploaded_at,
        # unpublished, bytes_written); index_lock the local index file's read-merge-write.
        self.books = threading.Lock()
        self.index_lock = threading.Lock()
        self.pinned = set()  # (generation, id) of manifests of other generations this attempt restored
        self.index_path = os.path.join(state_dir, "checkpoint-index.json")
        self.index_cache = None  # ((size, mtime_ns, inode) of the index file, its parsed content)

    # -- reading
    def ids(self, generation=None, others=None):
        """(prefix, all ids, published ids) of a generation (default: the attempt's), ascending.
        others: a set that receives the ids holding keys besides their manifest (format 1)."""
        gen = self.generation if generation is None else generation
        prefix = checkpoints_prefix(self.prefix, gen)
        ids, published = set(), set()
        for k in self.storage.list_keys(prefix):
            head, _, rest = k.partition("/")
            if head.isdigit() and rest:
                ids.add(head)
                if rest == MANIFEST_NAME:
                    published.add(head)
                elif others is not None:
                    others.add(head)
        return prefix, sorted(ids), sorted(published)

    def current_view(self, force=False):
        """What this store knows of storage, listed once and then kept up to date by its own
        publishes, retirements and collections, so a sync in steady state lists nothing:
        {"listedAt": epoch seconds of the listing, "prefix", "ids", "published", "others" (ids
        with keys besides a manifest), "pinned": {generation: published ids}, "stored": {sha256:
        (size, epoch seconds)}}. Listed again when force, or older than G/4: the reuse rule counts
        from the listing and a publish must follow within G/2 (module docstring). With G = 0 (one
        writer) it never goes stale. stored holds, on file://, the listing of every content (free,
        and its sizes let a small reused file skip its copy); on S3 only what this store uploaded:
        a content a live manifest names is stored by the rules above, and anything else is
        uploaded again rather than paying a listing of every content on each sync.
        Raises StorageError."""
        now = time.time()
        if force or self.view is None or (self.grace > 0 and now - self.view["listedAt"] >= self.grace / 4.0):
            others = set()
            prefix, ids, published = self.ids(others=others)
            pinned = {}
            for gen in sorted(set(g for g, _ in self.pinned)):
                pinned[gen] = self.ids(gen)[2]
            stored = self.stored_contents() if isinstance(self.storage, FileStorage) else {}
            self.view = {"listedAt": now, "prefix": prefix, "ids": ids, "published": published, "others": others,
                         "pinned": pinned, "stored": stored}
        stored = dict(self.view["stored"])
        with self.books:
            uploaded = list(self.uploaded_at.items())
        for sha, (size, at) in uploaded:
            if sha not in stored or stored[sha][1] < at:
                stored[sha] = (size, at)
        return dict(self.view, stored=stored)

    def _viewed_publish(self, cid):
        if self.view is not None:
            self.view["ids"] = sorted(set(self.view["ids"]) | {cid})
            self.view["published"] = sorted(set(self.view["published"]) | {cid})

    def _viewed_removal(self, cid):
        if self.view is not None:
            for field in ("ids", "published"):
                self.view[field] = [c for c in self.view[field] if c != cid]
            self.view["others"].discard(cid)

    def _viewed_deletion(self, shas):
        with self.books:
            for sha in shas:
                self.uploaded_at.pop(sha, None)
                if self.view is not None:
                    self.view["stored"].pop(sha, None)

    def count_written(self, n):
        """Add n bytes to bytes_written (sessions on two threads add to it)."""
        with self.books:
            self.bytes_written += n

    def manifest(self, generation, cid, cached=True):
        """The manifest of checkpoint cid (dict), or None when it is missing or not JSON."""
        if cached and (generation, cid) in self.manifests:
            return self.manifests[(generation, cid)]
        raw = self.storage.get_bytes(checkpoints_prefix(self.prefix, generation) + cid + "/" + MANIFEST_NAME)
        if raw is None:
            return None
        try:
            doc = json.loads(raw.decode("utf-8"))
        except ValueError:
            return None
        self.manifests[(generation, cid)] = doc
        return doc

    def pin(self, generation, cid):
        """Treat a manifest of another generation (the seed this attempt restored) as live for
        reuse while it is published, so its contents are reused instead of uploaded again."""
        self.pinned.add((generation, cid))
        self.view = None

    def content_key(self, sha):
        return contents_prefix(self.prefix) + sha

    def stored_contents(self):
        """{sha256: (size, stored time as epoch seconds)} of every stored content."""
        out = {}
        for key, size, mtime in self.storage.list_objects(contents_prefix(self.prefix)):
            if SHA256_RE.match(key):
                out[key] = (size, mtime)
        return out

    # -- the local index: what we know of files already stored, to skip reading them again
    def load_index(self):
        """{path: {"identity", "sha256"}} (a fresh dict the caller may change). Parsed again only
        when the file changed: Checkpoints.stage asks ten times a second, and the index of a
        checkpoint of thousands of files takes tens of milliseconds to parse."""
        try:
            st = os.stat(self.index_path)
            key = (st.st_size, st.st_mtime_ns, st.st_ino)
            if self.index_cache is None or self.index_cache[0] != key:
                with open(self.index_path, "rb") as f:
                    doc = json.loads(f.read().decode("utf-8"))
                self.index_cache = (key, doc if isinstance(doc, dict) else {})
            return dict(self.index_cache[1])
        except (OSError, ValueError):
            return {}

    def save_index(self, index):
        atomic_write(self.index_path, json_bytes(index))

    def remember(self, root, files):
        """Record the identity of files just restored into root (entries with path and sha256)."""
        index = {}
        for f in files:
            try:
                st = os.lstat(os.path.join(root, *f["path"].split("/")))
            except OSError:
                continue
            index[f["path"]] = {"identity": FileEntry.of(f["path"], st).identity(), "sha256": f["sha256"]}
        self.save_index(index)

    # -- sync
    def begin(self):
        """A sync session: lists stored contents and this generation's manifests once."""
        return SyncSession(self)

    def sync_tree(self, root, tree, step=None, require_all=True, only=None, previous=None):
        """Publish the folder at root as described by tree (checkpoint_tree.scan_tree).

        only: optional set of file paths to include (the capture layer's choice; default all);
        require_all: publish nothing when any included file was rejected; previous: the entries
        ({"files","dirs","symlinks"}) of the last published or restored checkpoint, so an
        identical folder is not published again. Returns {"manifest": dict or None, "accepted",
        "rejected", "refused" (links leaving the folder, special files), "unchanged": bool}.
        """
        for r in tree.refused:
            self.log("checkpoint: refused %s" % r["reason"])
        entries = [f for f in tree.files if only is None or f.path in only]
        session = self.begin()
        result = session.add_files(root, entries)
        out = {"manifest": None, "accepted": result["accepted"], "rejected": result["rejected"],
               "refused": list(tree.refused), "unchanged": False}
        if result["rejected"] and require_all:
            return out
        if not result["accepted"] and not tree.dirs and not tree.symlinks:
            return out
        files = [dict(f) for f in result["accepted"]]
        if previous is not None and entries_equal(previous, files, tree.dirs, tree.symlinks):
            out["unchanged"] = True
            return out
        out["manifest"] = session.publish(files, tree.dirs, tree.symlinks, step=step)
        return out

    # -- retention
    def retain(self, keep, should_yield=None):
        """Keep the newest `keep` published checkpoints of this generation; retire the older ones
        (tombstone first, then the manifest, then a format-1 checkpoint's own files), delete
        unpublished leftovers older than the oldest kept, then, when a retired manifest named
        stored contents and a collection is due (collect_due), collect unreferenced contents
        (crash leftovers go with the next collection; retiring a format-1 checkpoint frees none,
        so it costs no listing). Reads the ids from current_view (no listing in steady state).
        should_yield() -> bool is asked before each retirement and each collection step: True
        (a save is waiting) stops here, as a crash would, and sets self.yielded; the rest is done
        by the next call. Returns the retired ids. Raises StorageError."""
        self.yielded = False
        view = self.current_view()
        prefix, ids, published, others = view["prefix"], view["ids"], view["published"], view["others"]
        retired = []
        freed = False  # a retired manifest named stored contents (format 1 keeps its files in its folder)
        if len(published) > keep:
            oldest_kept = published[-keep]
            for cid in ids:
                if cid >= oldest_kept:
                    break
                if should_yield is not None and should_yield():
                    self.yielded = True
                    return retired
                shas = []
                if cid in published:
                    manifest = self.manifest(self.generation, cid)
                    shas = sorted(manifest_shas(manifest))
                    if shas:
                        freed = True
                        self.kill("tombstone")
                        self.storage.put_bytes(retired_prefix(self.prefix) + "g%d-%s.json" % (self.generation, cid), json_bytes(
                            {"generation": self.generation, "id": cid, "retiredAt": now_iso(), "retiredAtEpoch": time.time(), "sha256": shas}))
                    self.kill("manifest-delete")
                    self.storage.delete(prefix + cid + "/" + MANIFEST_NAME)
                    self.manifests.pop((self.generation, cid), None)
                    retired.append(cid)
                if cid in others or not shas:
                    # A format-2 checkpoint is its manifest alone; format 1 keeps its files beside it.
                    self.kill("checkpoint-dir-delete")
                    self.storage.delete_prefix(prefix + cid + "/")
                self._viewed_removal(cid)
                self.log("retention: deleted checkpoint %s (keep %d)" % (cid, keep))
        if (freed or self.collect_pending) and self.collect_due():
            self.collect(should_yield)
        return retired

    def collect_due(self):
        """True when a collection may find something: always with G = 0; otherwise at most once
        per G/4, since no content is deleted before it is G old anyway (a retired content stays
        at most 1.25 G; the default G of 1 h makes that 75 minutes)."""
        return self.grace <= 0 or self.last_collect is None or time.time() - self.last_collect >= self.grace / 4.0

    def collect(self, should_yield=None):
        """Delete contents no live manifest and no young tombstone names, stored more than G
        before this collection read the manifests; then tombstones older than G. Returns the
        number of contents deleted. should_yield: as for retain (a collection stopped early is
        due again at the next retention)."""
        self.collected_once = True
        t_read = time.time()
        self.last_collect = t_read
        self.collect_pending = True

        def stop():
            if should_yield is not None and should_yield():
                self.yielded = True
                self.last_collect = None
                return True
            return False
        refs = set()
        if stop():
            return 0
        for gen_dir in self.storage.list_dirs(self.prefix + "/"):
            m = re.match(r"^g(\d+)$", gen_dir)
            if not m:
                continue
            gen = int(m.group(1))
            _, _, published = self.ids(gen)
            for cid in published:
                refs |= manifest_shas(self.manifest(gen, cid))
        old_tombstones = []
        if stop():
            return 0
        for key, _size, mtime in self.storage.list_objects(retired_prefix(self.prefix)):
            if not key.endswith(".json"):
                continue
            if mtime < t_read - self.grace:
                old_tombstones.append(retired_prefix(self.prefix) + key)
                continue
            doc = self.tombstones.get(key)
            if doc is None:
                raw = self.storage.get_bytes(retired_prefix(self.prefix) + key)
                try:
                    doc = json.loads(raw.decode("utf-8")) if raw else {}
                except ValueError:
                    doc = {}
                self.tombstones[key] = doc
            refs |= set(s for s in doc.get("sha256") or [] if isinstance(s, str))
        doomed = []
        if stop():
            return 0
        for key, _size, mtime in self.storage.list_objects(contents_prefix(self.prefix), include_temp=True):
            sha = key.split(".", 1)[0]
            if (key != sha or sha not in refs) and mtime < t_read - self.grace:
                doomed.append(contents_prefix(self.prefix) + key)
        # One DeleteObjects call per 1,000 keys on S3; one key per kill point on file:// (the kill
        # matrix stops between any two deletions there).
        batch = 1 if isinstance(self.storage, FileStorage) else 1000
        if self.grace <= 0:
            # One writer, no time rule: what it stored for a manifest not yet written is kept.
            with self.books:
                unpublished = set(self.unpublished)
            doomed = [k for k in doomed if k[len(contents_prefix(self.prefix)):] not in unpublished]
        for start in range(0, len(doomed), batch):
            if stop():
                return start
            chunk = doomed[start:start + batch]
            self.kill("content-delete")
            self.storage.delete_many(chunk)
            self._viewed_deletion(k[len(contents_prefix(self.prefix)):] for k in chunk)
        for start in range(0, len(old_tombstones), batch):
            if stop():
                return len(doomed)
            chunk = old_tombstones[start:start + batch]
            self.kill("tombstone-delete")
            self.storage.delete_many(chunk)
            for key in chunk:
                self.tombstones.pop(key[len(retired_prefix(self.prefix)):], None)
        self.collect_pending = False
        if doomed:
            self.log("retention: deleted %d stored contents no kept checkpoint names" % len(doomed))
        return len(doomed)


def entries_equal(previous, files, dirs, symlinks):
    def norm_files(fs):
        return sorted((f["path"], f["size"], f["sha256"], f.get("mode")) for f in fs or [])
    return (norm_files(previous.get("files")) == norm_files(files)
            and sorted((d["path"], d.get("mode")) for d in previous.get("dirs") or []) == sorted((d["path"], d.get("mode")) for d in dirs)
            and sorted((s["path"], s["target"]) for s in previous.get("symlinks") or []) == sorted((s["path"], s["target"]) for s in symlinks))


class SyncSession(object):
    """One sync: what is stored (the store's current_view), what this sync added, and the counts."""

    def __init__(self, store):
        self.store = store
        self.index = store.load_index()
        self.uploaded = {}  # sha -> size, uploaded by this session
        self.counts = {"filesUploaded": 0, "filesReused": 0, "bytesUploaded": 0, "bytesReused": 0}
        self.accepted = {}  # path -> (entry, FileEntry)
        self.root = None
        self.one_pass = False
        self.listed_at = None
        self.refresh()

    def refresh(self, force=False):
        """Take the store's view (listed again when force or stale: current_view) and recompute
        what may be reused: what a live manifest names (stored before it was published, and
        never collected while it is live), and contents stored less than G/2 before the listing."""
        store = self.store
        view = store.current_view(force)
        self.listed_at = view["listedAt"]
        self.stored = view["stored"]
        self.ids, self.published = view["ids"], view["published"]
        live = set()
        for cid in self.published:
            live |= manifest_shas(store.manifest(store.generation, cid))
        for g, cid in store.pinned:
            if cid in view["pinned"].get(g, []):
                live |= manifest_shas(store.manifest(g, cid))
        young = self.listed_at - store.grace / 2.0
        self.protected = live | set(sha for sha, (_size, mtime) in self.stored.items() if store.grace <= 0 or mtime > young)

    def reusable(self, sha):
        return sha in self.uploaded or sha in self.protected

    def add_files(self, root, entries, reread=()):
        """Snapshot each file (checkpoint_tree.FileEntry) under root into the store.
        Returns {"accepted": [{"path","size","sha256","mode"}], "rejected": [{"path","reason"}],
        "vanished": [paths deleted since the scan]}.

        A file whose identity the local index knows is reused unread, under its own path or, from
        RENAMED_REUSE_FROM bytes, under the path it had before the job renamed it into place (a
        save written to a temp name or a tmp-checkpoint-*/ folder, then renamed: same inode, same
        mtime; the rename sets the ctime, so that match leaves it out). reread: paths never
        reused that way (a file the job mapped shared and writable: writes through a mapping
        need not move its mtime). Otherwise it is read once
        (up to READ_WORKERS files at once, read_in_parallel):
        on S3 it is hashed, and the contents not already stored are uploaded together by one
        `aws s3 cp --recursive` of a folder of symbolic links to them (no copy: the extra disk is
        zero; where a link cannot be made, that file is uploaded alone straight from the job's
        folder); on file:// it is copied into the store by the kernel while another thread hashes
        it (a file under HASH_FIRST_BELOW whose size matches a stored content is hashed first,
        then copied only when new, so a small reused file is never written).
        Every file's identity is checked again after its content is stored: a file that changed is rejected ("changed while it was copied"), and a content
        uploaded from a file that changed during the upload is deleted again, so a content is
        never left stored under a wrong hash by a finished sync (a SIGKILL in that window leaves
        it until collected; restore's sha256 check refuses it meanwhile)."""
        self.root = root
        accepted, rejected, pending, unread, vanished = [], [], [], [], []
        moved = self.known_identities()
        for entry in entries:
            known = self.index.get(entry.path)
            sha = known.get("sha256") if known and known.get("identity") == entry.identity() else None
            if sha is None and entry.size >= RENAMED_REUSE_FROM:
                # Renamed from another path only: at its own path, an unchanged moved identity
                # with a new ctime is a rewrite that kept the mtime (cp -p), not a rename.
                was = moved.get(tuple(entry.moved_identity()))
                sha = was[1] if was is not None and was[0] != entry.path else None
            if entry.path in reread:
                sha = None
            if sha is not None and self.reusable(sha):
                accepted.append(self._accept(entry, sha, uploaded=False)[1])
            else:
                unread.append(entry)
        # Hard links to one file (same identity, other paths) are read once: the others take its
        # content (break test 18: a pair was copied twice at every save, written / new 2.0).
        first_of, links = {}, []
        for entry in unread:
            key = tuple(entry.identity())
            if key in first_of:
                links.append((entry, first_of[key]))
            else:
                first_of[key] = entry
        unread = [e for e in unread if first_of[tuple(e.identity())] is e]
        sizes = set(size for size, _ in self.stored.values()) | set(self.uploaded.values())
        # Several large new files are read at once, one thread each: each is then copied and hashed
        # in one pass (one read of the page cache, not two); a large file read alone (the last
        # shard of a save whose others were stored as the job closed them) gets two threads.
        self.one_pass = sum(1 for e in unread if e.size >= PARALLEL_COPY_FROM) > 1
        for entry, read in zip(unread, read_in_parallel(lambda e: self._read(root, e, sizes), unread)):
            ok, value = self._settle(entry, read)
            if ok == "vanished":
                vanished.append(entry.path)  # deleted since the scan: not in this checkpoint (the caller decides the rest)
                continue
            if ok is None:
                pending.append((entry, value))
            elif ok:
                accepted.append(value)
            else:
                rejected.append({"path": entry.path, "reason": value})
        if pending:
            for ok, entry, value in self._upload(root, pending):
                if ok == "vanished":
                    vanished.append(entry.path)
                elif ok:
                    accepted.append(value)
                else:
                    rejected.append({"path": entry.path, "reason": value})
        by_path = dict((f["path"], f) for f in accepted)
        for entry, first in links:
            taken = by_path.get(first.path)
            path = os.path.join(root, *entry.path.split("/"))
            if not os.path.lexists(path):
                vanished.append(entry.path)
            elif taken is not None and same_identity(path, entry):
                accepted.append(self._accept(entry, taken["sha256"], uploaded=False)[1])
            else:
                rejected.append({"path": entry.path, "reason": "%s changed while it was copied" % entry.path})
        accepted.sort(key=lambda f: f["path"])
        rejected.sort(key=lambda r: r["path"])
        return {"accepted": accepted, "rejected": rejected, "vanished": sorted(vanished)}

    def known_identities(self):
        """{(size, mtime_ns, inode, device): (path, sha256)} of the files the local index knows
        (FileEntry.moved_identity: what a rename leaves unchanged)."""
        out = {}
        for path, known in self.index.items():
            identity = known.get("identity") if isinstance(known, dict) else None
            if isinstance(identity, list) and isinstance(known.get("sha256"), str):
                out[tuple(identity[:4])] = (path, known["sha256"])
        return out

    def add(self, root, entry):
        """(True, file entry dict) once the file's content is stored, or (False, reason)."""
        result = self.add_files(root, [entry])
        if result["accepted"]:
            return True, result["accepted"][0]
        if result["vanished"]:
            return False, "%s was deleted while it was read" % entry.path
        return False, result["rejected"][0]["reason"]

    def _read(self, root, entry, stored_sizes):
        """Read one file the index does not know, on a worker thread (it changes no session
        state): hash it, and on file:// copy it into the store under a temp name. Returns
        {"error": reason} or {"sha": sha256, "tmp": temp path or None, "began": time.time()},
        plus "written": bytes copied into the store (rejected copies included)."""
        path = os.path.join(root, *entry.path.split("/"))
        local = isinstance(self.store.storage, FileStorage)
        if local and (entry.size not in stored_sizes or entry.size >= HASH_FIRST_BELOW):
            # Copied while hashed; a large file of a stored size is more likely new (a shard) than
            # a copy, so its copy is not held back by hashing first (discarded when stored).
            return self._copy_in(path, entry, None)
        try:
            sha = hash_file(path)
        except FileNotFoundError:
            return {"vanished": True}
        except OSError as e:
            return {"error": "cannot read %s: %s" % (entry.path, e)}
        if not same_identity(path, entry):
            return {"error": "%s changed while it was read" % entry.path}
        if self.reusable(sha) or not local:
            return {"sha": sha, "tmp": None}
        return self._copy_in(path, entry, sha)

    def _copy_in(self, path, entry, sha):
        """file://: copy into the store's folder under a unique temp name (sha: the content's
        hash when already read; then the kernel copies it)."""
        final_dir = self.store.storage.local_path(contents_prefix(self.store.prefix))
        os.makedirs(final_dir, exist_ok=True)
        tmp = os.path.join(final_dir, "incoming.tmp-%d-%d" % (os.getpid(), next(TEMP_SEQ)))
        began = time.time()
        try:
            self.store.kill("content-copy")
            if sha is None:
                sha, size = (copy_hashing if self.one_pass else copy_and_hash)(path, tmp)
            else:
                shutil.copyfile(path, tmp)
                size = os.path.getsize(tmp)
        except OSError as e:
            written = os.path.getsize(tmp) if os.path.exists(tmp) else 0
            remove_quietly(tmp)
            if isinstance(e, FileNotFoundError) and not os.path.lexists(path):
                return {"vanished": True, "written": written}
            return {"error": "cannot read %s: %s" % (entry.path, e), "written": written}
        written = os.path.getsize(tmp)
        if size != entry.size or not same_identity(path, entry):
            remove_quietly(tmp)
            return {"error": "%s changed while it was copied" % entry.path, "written": written}
        return {"sha": sha, "tmp": tmp, "began": began, "written": written}

    def _settle(self, entry, read):
        """The bookkeeping of one _read, one file at a time: (True, value) stored or reused;
        (False, reason) rejected; (None, sha256) hashed, to upload (S3); ("vanished", None)
        deleted since the scan."""
        self.store.count_written(read.get("written", 0))
        if read.get("vanished"):
            return "vanished", None
        if "error" in read:
            return False, read["error"]
        sha, tmp = read["sha"], read["tmp"]
        try:
            if self.reusable(sha):
                return self._accept(entry, sha, uploaded=False)
            if tmp is None:
                return None, sha
            self.store.kill("content-rename")
            os.replace(tmp, os.path.join(os.path.dirname(tmp), sha))
            return self._accept(entry, sha, uploaded=True, began=read["began"])
        finally:
            if tmp is not None:
                remove_quietly(tmp)

    def _upload(self, root, pending):
        """S3: upload the hashed new contents of pending [(FileEntry, sha256)] with one AWS CLI
        call (`aws s3 cp --recursive` of a folder of symbolic links named by sha256, which it
        follows); yields (ok, entry, value or reason) per entry. Symbolic, not hard, links: a
        hard link would set the ctime of the job's file, which is how the agent sees the job
        change it (FileEntry). A file the job replaced or rewrote during the upload fails its
        identity check afterwards, and its uploaded content is deleted again."""
        store = self.store
        # One folder per upload: the stager and a sync may upload at once.
        staging = os.path.join(store.state_dir, "upload", "%d-%d" % (os.getpid(), next(TEMP_SEQ)))
        remove_quietly(staging)
        for attempt in range(3):
            try:
                os.makedirs(staging)
                break
            except FileNotFoundError:  # the parent, made just now, removed by an upload finishing
                if attempt == 2:
                    raise
        linked, alone = {}, []  # sha -> [(entry, path)]; [(entry, path, sha)]
        try:
            for entry, sha in pending:
                path = os.path.join(root, *entry.path.split("/"))
                if sha in linked:
                    linked[sha].append((entry, path))
                    continue
                try:
                    os.symlink(os.path.abspath(path), os.path.join(staging, sha))
                    linked[sha] = [(entry, path)]
                except OSError:
                    alone.append((entry, path, sha))
            began = time.time()
            skipped = set()
            if linked:
                store.kill("content-put")
                # A file the job deletes meanwhile is skipped, and the rest uploaded (break test 18:
                # retried as an S3 error, a rotated folder stalled every sync for 20 s).
                skipped = set(os.path.basename(p) for p in store.storage.put_tree(contents_prefix(store.prefix), staging))
            for sha, users in sorted(linked.items()):
                if sha in skipped:
                    for entry, path in users:
                        if not os.path.lexists(path):
                            yield "vanished", entry, None
                        else:
                            yield False, entry, "%s changed while it was copied" % entry.path
                    continue
                # The uploaded bytes are the linked file's: unchanged identity = the hashed content.
                intact = same_identity(users[0][1], users[0][0])
                if not intact:
                    store.kill("content-delete")
                    store.storage.delete(store.content_key(sha))
                else:
                    store.count_written(users[0][0].size)
                for entry, path in users:
                    if intact and same_identity(path, entry):
                        yield True, entry, self._accept(entry, sha, uploaded=sha not in self.uploaded, began=began)[1]
                    else:
                        yield False, entry, "%s changed while it was copied" % entry.path
            for entry, path, sha in alone:
                if sha in self.uploaded:
                    if same_identity(path, entry):
                        yield True, entry, self._accept(entry, sha, uploaded=False)[1]
                    else:
                        yield False, entry, "%s changed while it was copied" % entry.path
                    continue
                store.kill("content-put")
                began = time.time()
                store.storage.put_file(store.content_key(sha), path)
                if not same_identity(path, entry):
                    store.kill("content-delete")
                    store.storage.delete(store.content_key(sha))
                    yield False, entry, "%s changed while it was copied" % entry.path
                    continue
                store.count_written(entry.size)
                yield True, entry, self._accept(entry, sha, uploaded=True, began=began)[1]
        finally:
            remove_quietly(staging)
            try:
                os.rmdir(os.path.dirname(staging))  # left while another upload still uses it
            except OSError:
                pass

    def _accept(self, entry, sha, uploaded, began=None):
        """Count a file as stored; uploaded: by this session (began: time.time() before its
        upload started, which is never later than the stored object's time)."""
        if uploaded:
            self.uploaded[sha] = entry.size
            with self.store.books:
                self.store.unpublished.add(sha)
                self.store.uploaded_at[sha] = (entry.size, began if began is not None else time.time())
            self.counts["filesUploaded"] += 1
            self.counts["bytesUploaded"] += entry.size
        else:
            self.counts["filesReused"] += 1
            self.counts["bytesReused"] += entry.size
        value = {"path": entry.path, "size": entry.size, "sha256": sha, "mode": entry.mode}
        self.accepted[entry.path] = (value, entry)
        return True, value

    def keep_index(self):
        """Record the identities of the files this session stored without publishing them (a sync
        held back by a save in progress, or a save stored ahead), so the next sync reuses them
        unread. Merged into the index as it is now: another session may have written it since
        this one began."""
        with self.store.index_lock:
            index = self.store.load_index()
            for path, (value, entry) in self.accepted.items():
                index[path] = {"identity": entry.identity(), "sha256": value["sha256"]}
            self.store.save_index(index)

    def catch_up(self):
        """Take in what another session stored since this one began (the index it kept, its
        contents in the store's view), so that files it stored are reused unread. Raises StorageError."""
        self.index = self.store.load_index()
        self.refresh()

    def publish(self, files, dirs, symlinks, step=None, step_source=None):
        """Write the manifest (last). files: entries this session accepted, or entries of a
        checkpoint still published whose contents are reusable (a file left out keeps its last
        published version); step/step_source: what the checkpoint holds (steps.py). The sync
        counts are of these files: uploaded by this session vs already stored. Returns it.
        When the session is older than G/2, lists again first and re-adds anything no longer
        protected (raising StorageError if a file changed meanwhile: the caller retries later)."""
        store = self.store
        if store.grace > 0 and time.time() - self.listed_at > store.grace / 2.0:
            self.refresh(force=True)
            for f in files:
                if not self.reusable(f["sha256"]):
                    if f["path"] not in self.accepted:
                        raise StorageError("the stored content of %s is no longer protected by a published checkpoint; "
                                           "it is published with the next sync" % f["path"])
                    _, entry = self.accepted[f["path"]]
                    self.index.pop(f["path"], None)
                    ok, again = self.add(self.root, entry)
                    if not ok or again["sha256"] != f["sha256"]:
                        raise StorageError("%s changed during a sync that outlasted half the grace period; "
                                           "it is published with the next sync" % f["path"])
        cid = pad_seq((int(self.ids[-1]) if self.ids else 0) + 1)
        counts = {"filesUploaded": 0, "filesReused": 0, "bytesUploaded": 0, "bytesReused": 0}
        counted = set()
        for f in files:
            # Uploaded for this checkpoint: by this session, or by an earlier one that stored the
            # save ahead of its declaration (nothing published names it yet).
            if (f["sha256"] in self.uploaded or f["sha256"] in store.unpublished) and f["sha256"] not in counted:
                counted.add(f["sha256"])
                counts["filesUploaded"] += 1
                counts["bytesUploaded"] += f["size"]
            else:
                counts["filesReused"] += 1
                counts["bytesReused"] += f["size"]
        manifest = {"format": FORMAT, "id": cid, "run": store.run, "generation": store.generation, "attempt": store.attempt,
                    "createdAt": now_iso(), "files": files, "dirs": list(dirs), "symlinks": list(symlinks),
                    "sync": counts}
        if step is not None:
            manifest["step"] = step
            if step_source:
                manifest["stepSource"] = step_source
        store.kill("manifest-put")
        data = json_bytes(manifest)
        store.storage.put_bytes(checkpoints_prefix(store.prefix, store.generation) + cid + "/" + MANIFEST_NAME, data)
        store.count_written(len(data))
        store.manifests[(store.generation, cid)] = manifest
        store._viewed_publish(cid)
        with store.books:
            store.unpublished -= set(f["sha256"] for f in files)
            unpublished = set(store.unpublished)
        # The identities of the published files, of files this session stored without publishing
        # them (a folder not yet complete), and of what is stored ahead of the next declaration
        # (another session's, still unpublished), so the next sync reads none of them again.
        with store.index_lock:
            index = dict((path, known) for path, known in store.load_index().items()
                         if isinstance(known, dict) and known.get("sha256") in unpublished)
            for path, (value, entry) in self.accepted.items():
                index[path] = {"identity": entry.identity(), "sha256": value["sha256"]}
            for f in files:
                _, entry = self.accepted.get(f["path"], (None, None))
                if entry is not None:
                    index[f["path"]] = {"identity": entry.identity(), "sha256": f["sha256"]}
            store.save_index(index)
        return manifest


def read_in_parallel(read, entries):
    """[read(entry) for entry in entries], on up to READ_WORKERS threads: hashing is the floor of
    a sync's time (one core hashes sha256 at about 1 GB/s at best, a page-cache copy is faster), and
    hashlib and the kernel's copy release the GIL, so the shards of a checkpoint are read at once."""
    workers = min(READ_WORKERS, os.cpu_count() or 1, len(entries))
    if workers <= 1:
        return [read(e) for e in entries]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(read, entries))


def hash_file(path):
    """sha256 hex of the file at path. Raises OSError."""
    return hash_counting(path)[0]


def hash_counting(path):
    """(sha256 hex, bytes read) of the file at path, read into one reused buffer: a fresh bytes
    object per chunk costs a quarter more time than the hashing itself on a page-cached shard
    (mmap would avoid the copy, but a job truncating the file in place would SIGBUS the agent).
    Raises OSError."""
    h = hashlib.sha256()
    buf = bytearray(COPY_CHUNK)
    view = memoryview(buf)
    n = 0
    with open(path, "rb", buffering=0) as f:
        while True:
            got = f.readinto(buf)
            if not got:
                break
            h.update(view[:got])
            n += got
    return h.hexdigest(), n


def copy_and_hash(src, dest):
    """Copy src to dest (the kernel copies: shutil.copyfile) while another thread hashes src, so the
    copy takes about as long as the slower of the two instead of their sum. Returns (sha256 hex,
    bytes copied); the caller checks src's identity afterwards (unchanged = both saw the same bytes)
    and that the bytes hashed equal the bytes copied. Raises OSError."""
    if os.path.getsize(src) < PARALLEL_COPY_FROM:
        return copy_hashing(src, dest)
    out = {}

    def run():
        try:
            out["hashed"] = hash_counting(src)
        except OSError as e:
            out["error"] = e

    t = threading.Thread(target=run)
    t.start()
    try:
        shutil.copyfile(src, dest)
    finally:
        t.join()
    if "error" in out:
        raise out["error"]
    sha, hashed = out["hashed"]
    copied = os.path.getsize(dest)
    if hashed != copied:
        return sha, -1  # the file changed between the two reads: the caller rejects it
    return sha, copied


def copy_hashing(src, dest):
    """Copy src to dest while hashing, one read of each chunk into a reused buffer (hash_counting);
    returns (sha256 hex, bytes copied). Raises OSError."""
    h = hashlib.sha256()
    buf = bytearray(COPY_CHUNK)
    view = memoryview(buf)
    size = 0
    with open(src, "rb", buffering=0) as fin, open(dest, "wb", buffering=0) as fout:
        while True:
            got = fin.readinto(buf)
            if not got:
                break
            h.update(view[:got])
            done = 0
            while done < got:
                done += fout.write(view[done:got])
            size += got
    return h.hexdigest(), size


def same_identity(path, entry):
    """True when the file at path still has entry's identity (checkpoint_tree.FileEntry: size,
    mtime_ns, inode, device, ctime_ns)."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return FileEntry.of(entry.path, st).identity() == entry.identity()


def valid_manifest_entries(manifest):
    """None when a format-2 manifest's entries are well formed, else the reason."""
    for f in manifest.get("files") or []:
        if not isinstance(f, dict) or not safe_relpath(f.get("path") or "") or not isinstance(f.get("size"), int) \
                or not SHA256_RE.match(str(f.get("sha256"))):
            return "manifest lists an invalid file entry %r" % (f.get("path") if isinstance(f, dict) else f,)
    for d in manifest.get("dirs") or []:
        if not isinstance(d, dict) or not safe_relpath(d.get("path") or ""):
            return "manifest lists an invalid folder entry %r" % (d,)
    for s in manifest.get("symlinks") or []:
        if not isinstance(s, dict) or not safe_relpath(s.get("path") or "") or not isinstance(s.get("target"), str):
            return "manifest lists an invalid link entry %r" % (s,)
        target = s["target"]
        joined = os.path.normpath(os.path.join(os.path.dirname(s["path"]), target))
        if os.path.isabs(target) or joined == ".." or joined.startswith("../"):
            return "manifest lists a link leaving the folder: %s -> %s" % (s["path"], target)
    return None
