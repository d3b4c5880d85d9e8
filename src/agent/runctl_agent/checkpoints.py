"""Checkpoints: sync the job's checkpoint dir to storage, keep the newest `keep`, restore.

Layout (src/agent/layout.ts): runs/<run>/g<gen>/checkpoints/<8-digit id>/<files>, then
<id>/MANIFEST.json written last; a checkpoint without its manifest does not exist.
stateDir/checkpoints.json remembers the dir's fingerprint and the files of the last published or
restored checkpoint, so an unchanged dir costs no upload.
"""

import hashlib
import json
import os
import re
import threading

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


def snapshot(src, dest):
    """Copy regular files of src into dest, hashing as it goes; returns manifest file entries."""
    files = []
    for rel in list_files(src):
        if rel == MANIFEST_NAME:
            continue  # reserved for the agent's manifest
        s = os.path.join(src, *rel.split("/"))
        d = os.path.join(dest, *rel.split("/"))
        os.makedirs(os.path.dirname(d), exist_ok=True)
        h = hashlib.sha256()
        size = 0
        try:
            with open(s, "rb") as fin, open(d, "wb") as fout:
                for chunk in iter(lambda: fin.read(1024 * 1024), b""):
                    h.update(chunk)
                    fout.write(chunk)
                    size += len(chunk)
        except FileNotFoundError:
            remove_quietly(d)
            continue
        files.append({"path": rel, "size": size, "sha256": h.hexdigest()})
    return files


class Checkpoints:
    """The checkpoint side of one attempt.

    cfg: AgentConfig; storage: a storage backend; state_dir: the agent's stateDir; key: {run,
    generation, attempt}; log(message); note(text) writes to job.log; set_status(publish=False,
    **fields) updates the status object; stopping() -> bool; current_step() -> int or None.
    """

    def __init__(self, cfg, storage, state_dir, key, log, note, set_status, stopping, current_step):
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

    # -- sync
    def sync(self, final):
        """Publish the checkpoint dir if it changed; returns the new CheckpointRef or None."""
        with self.lock:
            src = self.cfg["checkpointDir"]
            state = read_json(self.p("checkpoints.json")) or {"fingerprint": [], "files": []}
            before = fingerprint(src)
            if not before or before == state.get("fingerprint"):
                return None
            step = self.current_step()  # the manifest records the step the job had reached
            staging = self.p("staging")
            files = None
            for _ in range(3):
                remove_quietly(staging)
                os.makedirs(staging)
                files = snapshot(src, staging)
                after = fingerprint(src)
                if after == before:
                    break
                before = after
                files = None
            if files is None and not final:
                self.log("checkpoint dir kept changing during the snapshot; trying again next interval")
                return None
            if files is None:
                files = snapshot(src, staging)
            if not files:
                return None
            if files == state.get("files"):
                state["fingerprint"] = before
                atomic_write(self.p("checkpoints.json"), json_bytes(state))
                return None
            prefix, ids, published = self.ids(self.cfg["generation"])
            cid = pad_seq((int(ids[-1]) if ids else 0) + 1)
            manifest = dict(self.key, id=cid, createdAt=now_iso(), files=files)
            if step is not None:
                manifest["step"] = step
            self.storage.put_tree(prefix + cid + "/", staging)
            self.storage.put_bytes(prefix + cid + "/" + MANIFEST_NAME, json_bytes(manifest))
            ref = {"id": cid, "files": len(files), "bytes": sum(f["size"] for f in files), "at": manifest["createdAt"]}
            if step is not None:
                ref["step"] = step
            atomic_write(self.p("checkpoints.json"), json_bytes({"fingerprint": before, "files": files, "lastCheckpoint": ref}))
            remove_quietly(staging)
            self.log("published checkpoint %s (%d files, %d bytes%s)" % (cid, ref["files"], ref["bytes"], "" if step is None else ", step %d" % step))
            self.note("checkpoint %s published%s" % (cid, "" if step is None else " at step %d" % step))
            self.set_status(publish=False, lastCheckpoint=ref)
            self.apply_retention(prefix, ids + [cid], published + [cid])
            return ref

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
            self.log("retention: deleted checkpoint %s (keep %d)" % (cid, self.cfg["keep"]))

    def ids(self, generation):
        """(prefix, all ids, published ids) in a generation, ascending."""
        prefix = "runs/%s/g%d/checkpoints/" % (self.cfg["run"], generation)
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
        for cid in reversed(published):
            if self.stopping():
                return None
            tmp = self.p("restore")
            remove_quietly(tmp)
            os.makedirs(tmp)
            try:
                manifest, reason = self.download_verified(prefix + cid + "/", tmp)
            except StorageError as e:
                manifest, reason = None, "download failed: %s" % e
            if manifest is None:
                self.log("checkpoint g%d/%s failed verification: %s" % (generation, cid, reason))
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
            ref = {"id": cid, "files": len(manifest["files"]), "bytes": sum(f["size"] for f in manifest["files"]),
                   "at": manifest.get("createdAt") or now_iso()}
            if isinstance(manifest.get("step"), int):
                ref["step"] = manifest["step"]
            restored_from = {"id": cid}
            if generation != self.cfg["generation"]:
                restored_from["generation"] = generation
            if failure is not None:
                restored_from["fallbackFrom"] = failure[0]
                restored_from["reason"] = failure[1]
            self.log("restored checkpoint g%d/%s (%d files)" % (generation, cid, ref["files"]))
            self.note("restored checkpoint %s of generation %d%s" % (
                cid, generation, "" if failure is None else " (newest %s failed verification: %s)" % failure))
            # Files restored from a seed generation are not in this generation yet: the first
            # checkpoint this generation publishes carries them along with whatever the job changed.
            self.remember_dir(manifest["files"] if generation == self.cfg["generation"] else None,
                              ref if generation == self.cfg["generation"] else None)
            self.set_status(restoredFrom=restored_from, lastCheckpoint=ref if generation == self.cfg["generation"] else None)
            return cid
        if failure is not None:
            self.log("no checkpoint of generation %d passed verification (newest %s: %s)" % (generation, newest, failure[1]))
            self.set_status(message="no checkpoint of generation %d passed verification (newest %s: %s); starting from scratch" % (
                generation, newest, failure[1]))
        return None

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
