"""Checkpoints: sync the job's checkpoint dir to storage, keep the newest `keep`, restore.

Layout (src/agent/layout.ts): runs/<run>/g<gen>/checkpoints/<8-digit id>/<files>, then
<id>/MANIFEST.json written last; a checkpoint without its manifest does not exist.
stateDir/checkpoints.json remembers the dir's fingerprint and the files of the last published or
restored checkpoint, so an unchanged dir costs no upload.

WHICH files a sync publishes and WHEN (issue 9, docs/checkpoints.md): capture.py decides per file
(open for writing by the job, killed mid-save, quiescence, changed while copied); a file left out
keeps its previously published version; a save the job declares (steps.py: the
`RUNCTL_CHECKPOINT_SAVED` line or the `.runctl-saved` marker) is synced at once and gives the
step; otherwise the step comes from a recognised layout or is unknown, never from progress.
"""

import hashlib
import json
import os
import re
import threading
import time

from .capture import Capture, scan_files
from .errors import AgentFailure
from .resume_evidence import avoided_checkpoints
from .steps import MARKER_FILE, layout_step, parse_marker, parse_saved_line

from .config import run_prefix
from .storage import StorageError
from .util import (atomic_write, json_bytes, list_files, now_iso, pad_seq, read_json, remove_quietly,
                   safe_relpath, sha256_file)

MANIFEST_NAME = "MANIFEST.json"


def fingerprint(base):
    """[[relpath, size, mtime_ns], ...] of the regular files under base (sorted by path)."""
    out = []
    for rel in list_files(base):
        try:
            st = os.stat(os.path.join(base, *rel.split("/")))
            out.append([rel, st.st_size, st.st_mtime_ns])
        except OSError:
            pass
    return out


class NoCheckpointLeft(AgentFailure):
    """Every kept checkpoint was restored by an earlier attempt that then failed (resume_evidence)."""


DEFAULT_THROUGHPUT = 20 * 1024 * 1024  # bytes/s assumed for the final upload before a sync was measured
TICK_SECONDS = 0.25  # how often the job's open files and declarations are looked at


class Checkpoints:
    """The checkpoint side of one attempt.

    cfg: AgentConfig; storage: a storage backend; state_dir: the agent's stateDir; key: {run,
    generation, attempt}; log(message); note(text) writes to job.log; set_status(publish=False,
    **fields) updates the status object; stopping() -> bool; current_step() -> int or None (the
    progress printed; only for messages, never a checkpoint's step); faults: faults.Faults.
    """

    def __init__(self, cfg, storage, state_dir, key, log, note, set_status, stopping, current_step, faults=None):
        self.cfg = cfg
        self.storage = storage
        self.state_dir = state_dir
        self.key = key
        self.log = log
        self.note = note
        self.set_status = set_status
        self.stopping = stopping
        self.current_step = current_step
        self.lock = threading.Lock()
        self.faults = faults
        quiet = min(1.0, max(0.2, cfg["syncIntervalSeconds"] / 2.0))
        self.capture = Capture(cfg["checkpointDir"], quiet_seconds=quiet, busy_after=2)
        self.declared = None  # (step or None, source) of a save the job declared, not yet published
        self.saved_cursor = None  # offset in job.log up to which declaration lines were read
        self.marker_seen = None  # (mtime_ns, size) of the marker file last seen
        self.throughput = None  # bytes/s measured on this instance's syncs
        self.last_uploaded = 0  # bytes the last publishing sync uploaded
        self.last_publish = time.time()
        self.changed_since_publish = False
        self.kept = {}  # id -> CheckpointRef of the kept checkpoints of this generation
        self.last_left_out = []

    def p(self, name):
        return os.path.join(self.state_dir, name)

    def remember_dir(self, files, ref=None):
        state = {"fingerprint": fingerprint(self.cfg["checkpointDir"]), "files": files or []}
        if ref:
            state["lastCheckpoint"] = ref
        atomic_write(self.p("checkpoints.json"), json_bytes(state))

    def last_checkpoint(self):
        """The lastCheckpoint ref remembered in stateDir (for an agent that adopts a job), or None."""
        return (read_json(self.p("checkpoints.json")) or {}).get("lastCheckpoint")

    # -- when: declarations and the job's open files, looked at every TICK_SECONDS
    def start_watching(self, log_path, offset):
        """Begin reading declaration lines in job.log from `offset` (the job's first byte)."""
        self.saved_cursor = (log_path, offset)
        self.marker_seen = self._marker_state()

    def _marker_state(self):
        try:
            st = os.stat(os.path.join(self.cfg["checkpointDir"], MARKER_FILE))
            return (st.st_mtime_ns, st.st_size)
        except OSError:
            return None

    def tick(self, sid):
        """One look: the job's files open for writing, new declaration lines, a rewritten marker.
        True when the job declared a save since the last look (the caller syncs at once)."""
        if sid is not None:
            self.capture.watch(sid)
        declared = False
        if self.saved_cursor is not None:
            path, offset = self.saved_cursor
            try:
                with open(path, "rb") as f:
                    f.seek(offset)
                    data = f.read(4 * 1024 * 1024)
            except OSError:
                data = b""
            cut = data.rfind(b"\n")
            if cut >= 0:
                for line in data[: cut + 1].decode("utf-8", "replace").splitlines():
                    ok, step = parse_saved_line(line.split("\r")[-1])
                    if ok:
                        self.declared = (step, "line" if step is not None else None)
                        declared = True
                self.saved_cursor = (path, offset + cut + 1)
        marker = self._marker_state()
        if marker is not None and marker != self.marker_seen:
            self.marker_seen = marker
            try:
                with open(os.path.join(self.cfg["checkpointDir"], MARKER_FILE), "rb") as f:
                    step = parse_marker(f.read(4096))
            except OSError:
                step = None
            self.declared = (step, "marker" if step is not None else None)
            declared = True
        if declared:
            self.capture.declared()
        return declared

    # -- sync
    def sync(self, final, sid=None, clean_exit=False):
        """Publish what of the checkpoint dir is complete, if it changed; returns the new
        CheckpointRef or None. final: the sync after the job ended (clean_exit: it exited 0);
        sid: the job's session id while it runs."""
        with self.lock:
            if final:
                self.tick(None)  # declarations printed just before the job ended
            try:
                ref = self._sync(final, sid, clean_exit)
            except Exception as e:
                self._stalled("the checkpoint sync failed: %s; the newest published checkpoint stays the one a resume gets. "
                              "Check the storage (%s) and the agent log" % (e, self.cfg["storage"]), None)
                raise
            return ref

    def _sync(self, final, sid, clean_exit):
        src = self.cfg["checkpointDir"]
        state = read_json(self.p("checkpoints.json")) or {"fingerprint": [], "files": []}
        before = fingerprint(src)
        if not before or (before == state.get("fingerprint") and self.declared is None):
            self.last_left_out = []
            self._not_stalled()
            return None
        self.changed_since_publish = True
        started = time.time()
        entries = scan_files(src)
        candidates, left = self.capture.choose(_Tree(entries), sid=sid, job_ended=final, clean_exit=final and clean_exit)
        staging = self.p("staging")
        remove_quietly(staging)
        os.makedirs(staging)
        try:
            accepted = []
            for entry in candidates:
                ok, value = copy_then_recheck(src, staging, entry)
                if ok:
                    accepted.append(value)
                else:
                    left.append({"path": entry.path, "reason": value})
            previous = {f["path"]: f for f in state.get("files") or []}
            taken = set(f["path"] for f in accepted)
            carried = []
            prev_ref = state.get("lastCheckpoint")
            for item in left:
                old = previous.get(item["path"])
                if old is not None and item["path"] not in taken and prev_ref:
                    if self._carry(prev_ref["id"], old, staging):
                        carried.append(dict(old))
                        taken.add(item["path"])
            files = sorted(accepted + carried, key=lambda f: f["path"])
            self._report_left_out(left)
            complete = not left
            if not files:
                return None
            if [(f["path"], f["sha256"]) for f in files] == [(f["path"], f["sha256"]) for f in state.get("files") or []]:
                state["fingerprint"] = before if complete else None
                atomic_write(self.p("checkpoints.json"), json_bytes(state))
                self.declared = None
                self.changed_since_publish = not complete
                if complete:
                    self._not_stalled()
                else:
                    self._maybe_stalled(left)
                return None
            step, source = self._step_for(files)
            prefix, ids, published = self.ids(self.cfg["generation"])
            cid = pad_seq((int(ids[-1]) if ids else 0) + 1)
            uploaded_bytes = sum(f["size"] for f in files)
            counts = {"filesUploaded": len(files), "filesReused": 0, "bytesUploaded": uploaded_bytes, "bytesReused": 0}
            manifest = dict(self.key, id=cid, createdAt=now_iso(), files=[{k: f[k] for k in ("path", "size", "sha256")} for f in files],
                            sync=counts)
            if step is not None:
                manifest["step"] = step
                manifest["stepSource"] = source
            self.storage.put_tree(prefix + cid + "/", staging)
            self.storage.put_bytes(prefix + cid + "/" + MANIFEST_NAME, json_bytes(manifest))
        finally:
            remove_quietly(staging)
        elapsed = max(time.time() - started, 1e-3)
        if uploaded_bytes >= 64 * 1024:  # small syncs measure latency, not throughput
            self.throughput = uploaded_bytes / elapsed
        self.last_uploaded = uploaded_bytes
        ref = ref_of(manifest)
        atomic_write(self.p("checkpoints.json"), json_bytes({"fingerprint": before if complete else None,
                                                             "files": manifest["files"], "lastCheckpoint": ref}))
        self.declared = None
        self.last_publish = time.time()
        self.changed_since_publish = not complete
        self._not_stalled()
        self.log("published checkpoint %s (%d files, %d bytes%s%s)" % (
            cid, ref["files"], ref["bytes"], "" if step is None else ", step %d from %s" % (step, source),
            "" if complete else "; left out: " + ", ".join(sorted(set(i["path"] for i in left)))))
        self.note("checkpoint %s published%s" % (cid, "" if step is None else " at step %d" % step))
        self.kept[cid] = ref
        self.apply_retention(prefix, ids + [cid], published + [cid])
        self.set_status(publish=False, lastCheckpoint=ref, checkpoints=self.kept_list())
        return ref

    def _carry(self, prev_id, entry, staging):
        """Put the previously published version of a file left out into staging; False if it
        cannot be had (then the file is simply absent from this checkpoint)."""
        prefix = "%s/g%d/checkpoints/" % (run_prefix(self.cfg), self.cfg["generation"])
        dest = os.path.join(staging, *entry["path"].split("/"))
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        try:
            if not self.storage.get_file(prefix + prev_id + "/" + entry["path"], dest):
                return False
        except StorageError:
            return False
        return sha256_file(dest) == entry["sha256"]

    def _step_for(self, files):
        if self.declared is not None and self.declared[0] is not None:
            return self.declared
        dirs = sorted(set(f["path"].rsplit("/", 1)[0] for f in files if "/" in f["path"]))
        return layout_step([f["path"] for f in files], dirs)

    def _report_left_out(self, left):
        self.last_left_out = left
        busy = self.capture.record(left)
        if self.faults is None:
            return
        if busy:
            first = busy[0]
            others = len(busy) - 1
            self.faults.report(
                "CheckpointFileBusy",
                "%s kept changing and was left out of the last %d checkpoints (%s)%s; the other files are published. "
                "Write it outside RUNCTL_CHECKPOINT_DIR, or close it before declaring a save, if a resume needs it" % (
                    first["path"], first["count"], first["reason"], "" if not others else " (and %d more)" % others),
                file=first["path"])
        else:
            self.faults.clear("CheckpointFileBusy")

    def _maybe_stalled(self, left):
        interval = self.cfg["syncIntervalSeconds"]
        if self.changed_since_publish and time.time() - self.last_publish >= 2 * interval and left:
            first = sorted(left, key=lambda i: i["path"])[0]
            self._stalled("nothing was published for %.0fs while the job kept changing its checkpoint folder: %s" % (
                time.time() - self.last_publish, first["reason"]), first["path"])

    def _stalled(self, message, file):
        if self.faults is not None:
            self.faults.report("CheckpointSyncStalled", message, file=file)

    def _not_stalled(self):
        if self.faults is not None:
            self.faults.clear("CheckpointSyncStalled")

    def check_stalled(self):
        """Called every interval even when a sync returned early: raises the fault when nothing was
        published for two intervals while files were being left out."""
        with self.lock:
            self._maybe_stalled(self.last_left_out)

    def kept_list(self):
        return [self.kept[k] for k in sorted(self.kept)]

    def final_wait_seconds(self, pending_bytes):
        """Seconds the final upload of `pending_bytes` is expected to take on this instance."""
        rate = self.throughput or DEFAULT_THROUGHPUT
        return max(pending_bytes, self.last_uploaded) / float(rate)

    def pending_bytes(self):
        """Bytes of the checkpoint dir's files changed since the last published checkpoint."""
        state = read_json(self.p("checkpoints.json")) or {}
        known = set((f["path"], f["size"]) for f in state.get("files") or [])
        return sum(e.size for e in scan_files(self.cfg["checkpointDir"]) if (e.path, e.size) not in known)

    def apply_retention(self, prefix, ids, published):
        if len(published) <= self.cfg["keep"]:
            return
        oldest_kept = published[-self.cfg["keep"]]
        for cid in ids:
            if cid >= oldest_kept:
                break
            if cid in published:
                self.storage.delete(prefix + cid + "/" + MANIFEST_NAME)
            self.storage.delete_prefix(prefix + cid + "/")
            self.kept.pop(cid, None)
            self.log("retention: deleted checkpoint %s (keep %d)" % (cid, self.cfg["keep"]))

    def ids(self, generation):
        """(prefix, all ids, published ids) in a generation, ascending."""
        prefix = "%s/g%d/checkpoints/" % (run_prefix(self.cfg), generation)
        ids, published = set(), set()
        for k in self.storage.list_keys(prefix):
            head, _, rest = k.partition("/")
            if head.isdigit() and rest:
                ids.add(head)
                if rest == MANIFEST_NAME:
                    published.add(head)
        return prefix, sorted(ids), sorted(published)

    # -- restore
    def restore(self):
        """Restore the newest verified checkpoint when resuming; True when one was restored."""
        if not self.cfg["resuming"]:
            self.log("not resuming: no checkpoint restore")
            os.makedirs(self.cfg["checkpointDir"], exist_ok=True)
            self.remember_dir(None)
            return False
        restored = None
        for gen in self.restore_generations():
            restored = self.restore_from(gen)
            if restored is not None:
                break
        if restored is None:
            os.makedirs(self.cfg["checkpointDir"], exist_ok=True)
            self.remember_dir(None)
            self.log("no published checkpoint to restore; the job starts from scratch")
            return False
        return True

    def restore_generations(self):
        gens = [self.cfg["generation"]]
        seed = self.cfg.get("seedGeneration")
        if seed is not None and seed != self.cfg["generation"]:
            gens.append(seed)
        return gens

    def restore_from(self, generation):
        prefix, _, published = self.ids(generation)
        if not published:
            return None
        newest = published[-1]
        failure = None
        avoided = {}
        if generation == self.cfg["generation"]:
            evidence = avoided_checkpoints(self.storage, run_prefix(self.cfg), generation, self.cfg["attempt"])
            avoided = dict((cid, evidence[cid]) for cid in published if cid in evidence)
            for a in sorted(avoided.values(), key=lambda a: a["id"], reverse=True):
                self.log("not restoring checkpoint g%d/%s: attempt %d restored it and failed before publishing a newer one (%s)" % (
                    generation, a["id"], a["attempt"], a["reason"]))
        tried = []
        for cid in reversed(published):
            if self.stopping():
                return None
            if cid in avoided:
                a = avoided[cid]
                tried.append("%s (attempt %d: %s)" % (cid, a["attempt"], a["reason"]))
                if failure is None:
                    failure = (cid, "attempt %d restored it and failed before publishing a newer one (%s)" % (a["attempt"], a["reason"]))
                continue
            tmp = self.p("restore")
            remove_quietly(tmp)
            os.makedirs(tmp)
            try:
                manifest, reason = self.download_verified(prefix + cid + "/", tmp)
            except StorageError as e:
                manifest, reason = None, "download failed: %s" % e
            if manifest is None:
                self.log("checkpoint g%d/%s failed verification: %s" % (generation, cid, reason))
                tried.append("%s (failed verification: %s)" % (cid, reason))
                if failure is None:
                    failure = (cid, reason)
                remove_quietly(tmp)
                continue
            target = self.cfg["checkpointDir"]
            os.makedirs(target, exist_ok=True)
            for name in os.listdir(target):
                remove_quietly(os.path.join(target, name))
            for f in manifest["files"]:
                src = os.path.join(tmp, *f["path"].split("/"))
                dest = os.path.join(target, *f["path"].split("/"))
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                os.replace(src, dest)
            remove_quietly(tmp)
            ref = ref_of(manifest, cid)
            if generation == self.cfg["generation"]:
                self.kept[cid] = ref
                self._remember_published(generation, [c for c in published if c != cid])
            restored_from = {"id": cid}
            if generation != self.cfg["generation"]:
                restored_from["generation"] = generation
            if failure is not None:
                restored_from["fallbackFrom"] = failure[0]
                restored_from["reason"] = failure[1]
            if avoided:
                restored_from["avoided"] = sorted(avoided.values(), key=lambda a: a["id"], reverse=True)
            self.log("restored checkpoint g%d/%s (%d files)" % (generation, cid, ref["files"]))
            self.note("restored checkpoint %s of generation %d%s" % (
                cid, generation, "" if failure is None else " (newest %s failed verification: %s)" % failure))
            # Files restored from a seed generation are not in this generation yet: the first
            # checkpoint this generation publishes carries them along with whatever the job changed.
            self.remember_dir(manifest["files"] if generation == self.cfg["generation"] else None,
                              ref if generation == self.cfg["generation"] else None)
            self.set_status(restoredFrom=restored_from, lastCheckpoint=ref if generation == self.cfg["generation"] else None,
                            checkpoints=self.kept_list() or None)
            return cid
        if avoided:
            raise NoCheckpointLeft(
                "no checkpoint of generation %d is left to restore: every kept one was tried: %s. Fix the job's resume path "
                "(its output is in the attempts' logs), then edit the spec to start a new generation" % (generation, ", ".join(tried)))
        if failure is not None:
            self.log("no checkpoint of generation %d passed verification (newest %s: %s)" % (generation, newest, failure[1]))
            self.set_status(message="no checkpoint of generation %d passed verification (newest %s: %s); starting from scratch" % (
                generation, newest, failure[1]))
        return None

    def _remember_published(self, generation, published):
        """The kept checkpoints' refs (for `describe`), from their manifests; the newest `keep`."""
        prefix = "%s/g%d/checkpoints/" % (run_prefix(self.cfg), generation)
        for cid in published[-(self.cfg["keep"] - 1):] if self.cfg["keep"] > 1 else []:
            try:
                raw = self.storage.get_bytes(prefix + cid + "/" + MANIFEST_NAME)
                manifest = json.loads(raw.decode("utf-8")) if raw else None
            except (StorageError, OSError, ValueError):
                manifest = None
            if isinstance(manifest, dict) and isinstance(manifest.get("files"), list):
                try:
                    self.kept[cid] = ref_of(manifest, cid)
                except (KeyError, TypeError):
                    pass

    def download_verified(self, prefix, dest):
        # One download of the whole checkpoint, manifest included (one AWS CLI call, not two).
        self.storage.get_tree(prefix, dest)
        try:
            with open(os.path.join(dest, MANIFEST_NAME), "rb") as f:
                raw = f.read()
        except OSError:
            return None, "manifest missing"
        try:
            manifest = json.loads(raw.decode("utf-8"))
            files = manifest["files"]
            for f in files:
                if not safe_relpath(f["path"]) or not isinstance(f["size"], int) or not re.match(r"^[0-9a-f]{64}$", f["sha256"]):
                    return None, "manifest lists an invalid entry %r" % (f.get("path"),)
        except (ValueError, KeyError, TypeError, AttributeError):
            return None, "manifest is unreadable"
        for f in files:
            path = os.path.join(dest, *f["path"].split("/"))
            if not os.path.isfile(path):
                return None, "file %s is missing" % f["path"]
            size = os.path.getsize(path)
            if size != f["size"]:
                return None, "file %s has %d bytes, manifest says %d" % (f["path"], size, f["size"])
            if sha256_file(path) != f["sha256"]:
                return None, "file %s fails its sha256 check" % f["path"]
        return manifest, None


class _Tree(object):
    """What Capture.choose reads: the files of the checkpoint folder."""

    def __init__(self, files):
        self.files = files


def ref_of(manifest, cid=None):
    """The CheckpointRef (src/providers/types.ts) of a manifest: id, step and its source when
    known, files, bytes, at, and the sync's uploaded vs reused counts when recorded."""
    files = manifest["files"]
    ref = {"id": cid or manifest["id"], "files": len(files), "bytes": sum(f["size"] for f in files),
           "at": manifest.get("createdAt") or now_iso()}
    if isinstance(manifest.get("step"), int) and not isinstance(manifest.get("step"), bool):
        ref["step"] = manifest["step"]
        if manifest.get("stepSource") in ("marker", "line", "huggingface", "lightning"):
            ref["stepSource"] = manifest["stepSource"]
    sync = manifest.get("sync")
    if isinstance(sync, dict):
        if isinstance(sync.get("filesUploaded"), int):
            ref["uploaded"] = sync["filesUploaded"]
        if isinstance(sync.get("filesReused"), int):
            ref["reused"] = sync["filesReused"]
        if isinstance(sync.get("bytesUploaded"), int):
            ref["uploadedBytes"] = sync["bytesUploaded"]
    return ref


def copy_then_recheck(src, staging, entry):
    """Copy one file (capture.FileEntry) into staging while hashing it, then check its size,
    mtime and inode again: (True, {"path","size","sha256"}) or (False, reason)."""
    s = os.path.join(src, *entry.path.split("/"))
    d = os.path.join(staging, *entry.path.split("/"))
    os.makedirs(os.path.dirname(d), exist_ok=True)
    h = hashlib.sha256()
    size = 0
    try:
        with open(s, "rb") as fin, open(d, "wb") as fout:
            for chunk in iter(lambda: fin.read(1024 * 1024), b""):
                h.update(chunk)
                fout.write(chunk)
                size += len(chunk)
        st = os.lstat(s)
    except OSError as e:
        remove_quietly(d)
        return False, "%s could not be read: %s" % (entry.path, e.strerror or e)
    if size != entry.size or (st.st_size, st.st_mtime_ns, st.st_ino) != entry.identity():
        remove_quietly(d)
        return False, "%s changed while it was copied" % entry.path
    return True, {"path": entry.path, "size": size, "sha256": h.hexdigest()}
