"""Checkpoints: sync the job's checkpoint dir to storage, keep the newest `keep`, restore.

Storage (checkpoint_store.py, docs/checkpoints.md "How checkpoints are stored"): each distinct
file content is stored once per run under <run prefix>/checkpoint-contents/<sha256>; a checkpoint
is a manifest (format 2), <run prefix>/g<gen>/checkpoints/<8-digit id>/MANIFEST.json, written last,
naming its files (path, size, sha256, mode), folders (empty ones too) and inner symbolic links; a
checkpoint without its manifest does not exist. Checkpoints written before (format 1: files beside
their manifest) still restore (checkpoint_restore.py). stateDir/checkpoints.json remembers the
folder's fingerprint and the entries of the last published or restored checkpoint, so an
unchanged folder costs no storage call at all.

WHICH files a sync publishes and WHEN (issue 9, docs/checkpoints.md): capture.py decides per file
(open for writing by the job, killed mid-save, quiescence, changed while copied); a file left out
keeps its previously published version; a save the job declares (steps.py: the
`RUNCTL_CHECKPOINT_SAVED` line or the `.runctl-saved` marker) is synced at once and gives the
step; otherwise the step comes from a recognised layout or is unknown, never from progress.
"""

import os
import stat
import threading
import time

from .capture import Capture, next_save_folder, proc_available, process_gone
from .checkpoint_restore import restore_checkpoint
from .checkpoint_store import DEFAULT_GRACE_SECONDS, CheckpointStore, entries_equal
from .checkpoint_tree import FileEntry, scan_tree
from .errors import AgentFailure
from .resume_evidence import avoided_checkpoints, holds_newer_state, published_by, sha256_prefix
from .steps import MARKER_FILE, VALID_DECLARATION, marker_step, published_step, saved_line

from .config import run_prefix
from .storage import StorageError
from .util import atomic_write, json_bytes, now_iso, read_json

FAULT_REFUSED = "CheckpointEntryRefused"


def restat(root, entry):
    """entry (checkpoint_tree.FileEntry) with its identity read again, or None when it is no
    longer a regular file."""
    try:
        st = os.lstat(os.path.join(root, *entry.path.split("/")))
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return FileEntry.of(entry.path, st)


def entries_of(manifest):
    """{"files", "dirs", "symlinks"} of a manifest (format 1 has files only)."""
    return {"files": manifest.get("files") or [], "dirs": manifest.get("dirs") or [], "symlinks": manifest.get("symlinks") or []}


class NoCheckpointLeft(AgentFailure):
    """Every kept checkpoint was restored by an earlier attempt that then failed (resume_evidence)."""


DEFAULT_THROUGHPUT = 20 * 1024 * 1024  # bytes/s assumed for the final upload before a sync was measured
TICK_SECONDS = 0.25  # how often the job's open files are looked at (a scan of /proc)
STAGE_TICK_SECONDS = 0.05  # how often a job that declares its saves is looked at for a file of a save it closed (stage)
STAGE_FROM_BYTES = 1024 * 1024  # smaller files are read at the declaration: they cost little, and change often
DECLARATION_POLL_SECONDS = 0.01  # how often the job's log and marker are looked at for a declared save
# An empty marker is read as a declaration without a step only once it has stayed empty this long:
# a marker written in place (open(..., "w") truncates, then writes) is empty for an instant first.
MARKER_SETTLE_SECONDS = 0.05


class Checkpoints:
    """The checkpoint side of one attempt.

    cfg: AgentConfig; storage: a storage backend; state_dir: the agent's stateDir; key: {run,
    generation, attempt}; log(message); note(text) writes to job.log; set_status(publish=False,
    **fields) updates the status object; stopping() -> bool; current_step() -> int or None (the
    progress printed; only for messages, never a checkpoint's step); faults: faults.Faults.
    """

    def __init__(self, cfg, storage, state_dir, key, log, note, set_status, stopping, current_step, faults=None, processes=None):
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
        self.capture = Capture(cfg["checkpointDir"], quiet_seconds=quiet, busy_after=2, processes=processes)
        self.declared = None  # (step or None, source) of a save the job declared, not yet published
        self.declared_at = None  # when that declaration was seen (epoch seconds)
        self.declaration_lock = threading.Lock()  # poll_declarations runs on its own thread too
        self.pending_declaration = None  # (step, source, seen at, {path: FileEntry} then) not yet taken by tick
        self.declared_seen = (None, None)  # (the declared tuple, {path: FileEntry} just after it was read)
        self.saved_cursor = None  # offset in job.log up to which declaration lines were read
        self.log_noted_until = None  # () -> where the agent's own last note to job.log ends (start_watching)
        self.last_read_started = None  # time.time() when the previous read of job.log began
        self.marker_seen = None  # (change time in ns, size, inode) of the marker file last seen
        self.empty_marker = None  # (marker state, time.time() first seen) of an empty marker not yet read
        self.throughput = None  # bytes/s measured on this instance's syncs
        self.last_uploaded = 0  # bytes the last publishing sync uploaded
        # When this attempt last published (CheckpointSyncStalled's clock). Started again when
        # the job starts (start_watching): a restore and an install of minutes are not a stall.
        self.last_publish = time.time()
        self.changed_since_publish = False
        self.kept = {}  # id -> CheckpointRef of the kept checkpoints of this generation
        self.last_left_out = []
        self.retention_due = False  # a checkpoint was published since the last retention
        self.retry_at = None  # monotonic time to sync again after a sync held back by a save in progress
        # The declared (step, source) the newest checkpoint this attempt published carries; a
        # final sync after a clean exit with nothing newer declared carries it on.
        self.last_declared = None
        self.last_declared_at = None  # when that declaration was seen (epoch seconds)
        self.last_declared_held = ({}, {})  # ({path: sha256}, {link path: target}) of that checkpoint
        self.refused_seen = set()
        # Saves stored while the job writes them (stage): on once the job declares a save (or the
        # checkpoint it resumes from was declared); {path: identity} already tried since the
        # last declaration, so a file reopened and rewritten before it costs one extra copy at most.
        self.declares_saves = False
        self.staged = {}
        self.last_held = None  # the files that held the last sync back, as logged
        self.stage_look_seconds = 0.0  # what the last look for finished files cost (stage_interval)
        self.in_flight = None  # StageFlight: the files stage is storing now, outside self.lock
        self.malformed_seen = set()  # (declaration, problem) already warned about
        # Resume evidence (resume_evidence.py): the checkpoint this attempt restored (id, manifest)
        # while nothing it published holds newer training state; the ids judged so far; the ids
        # earlier attempts' evidence names. Retention does not count those toward keep.
        self.resume_base = None
        self.judged = set()
        self.avoided_ids = set()
        self.store = CheckpointStore(storage, cfg["run"], cfg["generation"], cfg["attempt"], state_dir, log,
                                     grace_seconds=cfg.get("contentGraceSeconds", DEFAULT_GRACE_SECONDS),
                                     run_prefix=run_prefix(cfg))

    def p(self, name):
        return os.path.join(self.state_dir, name)

    def remember_dir(self, entries, ref=None):
        """Remember the folder as it is now and the entries ({"files","dirs","symlinks"}) of the
        checkpoint it holds (None: nothing published yet in this generation)."""
        state = {"fingerprint": scan_tree(self.cfg["checkpointDir"]).fingerprint(), "entries": entries or entries_of({})}
        if ref:
            state["lastCheckpoint"] = ref
        atomic_write(self.p("checkpoints.json"), json_bytes(state))

    def last_checkpoint(self):
        """The lastCheckpoint ref remembered in stateDir (for an agent that adopts a job), or None."""
        return (read_json(self.p("checkpoints.json")) or {}).get("lastCheckpoint")

    # -- when: declarations and the job's open files, looked at every TICK_SECONDS
    def start_watching(self, log_path, offset, noted_until=None):
        """Begin reading declaration lines in job.log from `offset` (bytes), and start the stall
        clock: nothing can be published before the job runs, so the restore's and the setup's
        time never counts as "nothing published" (break9: a 53 s restore raised
        CheckpointSyncStalled 3 s into the job). noted_until() -> the byte offset just after the
        agent's own last note to that log, or None (poll_declarations)."""
        self.last_publish = time.time()
        self.saved_cursor = (log_path, offset)
        self.marker_seen = self._marker_state()
        self.log_noted_until = noted_until
        self.last_read_started = None

    def _marker_state(self):
        try:
            st = os.stat(os.path.join(self.cfg["checkpointDir"], MARKER_FILE))
            return (max(st.st_mtime_ns, st.st_ctime_ns), st.st_size, st.st_ino)
        except OSError:
            return None

    def _marker_settled(self, marker, now):
        """False while the marker (its _marker_state) is empty and has not stayed empty for
        MARKER_SETTLE_SECONDS: a marker written in place is truncated before it is written, and
        read in between it would declare the save without its step (break test 20, 1 run in 3)."""
        if marker[1] > 0:
            self.empty_marker = None
            return True
        if self.empty_marker is None or self.empty_marker[0] != marker:
            self.empty_marker = (marker, now)
        return now - self.empty_marker[1] >= MARKER_SETTLE_SECONDS

    def tick(self, sid):
        """One look: the job's files open for writing, and the declarations seen since the last
        look (poll_declarations, here or on the declaration thread). True when the job declared
        a save since the last look (the caller syncs at once)."""
        if sid is not None:
            self.capture.watch(sid)
        self.poll_declarations()
        with self.declaration_lock:
            seen, self.pending_declaration = self.pending_declaration, None
        if seen is None:
            return False
        step, source, at, files = seen
        self.declared = (step, source)
        self.declared_seen = (self.declared, files)
        self.declared_at = at
        self.capture.declared(at=at)
        self.declares_saves = True
        self.staged = {}
        return True

    def poll_declarations(self):
        """Read new declaration lines in job.log and a rewritten marker, and note the newest as
        pending with the time it was made (epoch seconds): the change time (the later of mtime
        and ctime) of the log or the marker it was read from, or the clock read after reading
        them if that is earlier. Safe on any
        thread: the agent runs it every DECLARATION_POLL_SECONDS on a thread of its own, so a
        declaration is read within that poll of when the job made it even while the checkpoint
        loop is busy storing a file (break14: timed when the loop got to it, seconds later, a save
        begun after the declaration counted as part of it). True when one was seen.

        The time is read after the log and the marker, never before: a clock read before them
        can precede a declaration the read then finds, and the files the job wrote just before
        declaring would count as changed after it (CI, under load: the declared step was dropped
        and the checkpoint published with its step unknown). A file written after the
        declaration within the filesystem clock's granularity (a few ms), or a line declaration
        followed at once by more output and then a save, cannot be told from one written just
        before it."""
        with self.declaration_lock:
            found = None  # (step, source, the mtime of the log or the marker that declared it)
            found_at = None  # its byte offset in job.log, for a line
            read_started = time.time()
            if self.saved_cursor is not None:
                path, offset = self.saved_cursor
                try:
                    with open(path, "rb") as f:
                        f.seek(offset)
                        data = f.read(4 * 1024 * 1024)
                        # The log's mtime after the read is no earlier than the write of any line
                        # read: a kernel timestamp of the declaration at most as late as our clock,
                        # and as exact as a marker's when the job prints nothing after it (break
                        # test 15: under load this poll ran 20 ms late, and a save begun in between
                        # counted as part of the declared one).
                        st = os.fstat(f.fileno())
                        written = max(st.st_mtime_ns, st.st_ctime_ns) / 1e9
                except OSError:
                    data, written = b"", None
                cut = data.rfind(b"\n")
                if cut >= 0:
                    at = offset  # the byte offset of each line in job.log
                    for raw in data[: cut + 1].split(b"\n")[:-1]:
                        for line in raw.decode("utf-8", "replace").splitlines():
                            ok, step, problem = saved_line(line.split("\r")[-1])
                            if problem:
                                self._malformed(line.split("\r")[-1].strip(), problem)
                            if ok:
                                found = (step, "line" if step is not None else None, written)
                                found_at = at
                        at += len(raw) + 1
                    noted = self.log_noted_until() if (found is not None and self.log_noted_until) else None
                    if noted is not None and found_at < noted:
                        # The agent wrote a note to the log after the line (an agent restarted
                        # reading a line printed before it started, break test 18; a note while
                        # the job declared): the log's change time is the agent's, not the job's.
                        # The line was written after the previous read began (any time, if this
                        # is the first read).
                        found = (found[0], found[1], self.last_read_started or 0.0)
                    self.saved_cursor = (path, offset + cut + 1)
            self.last_read_started = read_started
            marker = self._marker_state()
            if marker is not None and marker != self.marker_seen and self._marker_settled(marker, read_started):
                self.marker_seen = marker
                try:
                    with open(os.path.join(self.cfg["checkpointDir"], MARKER_FILE), "rb") as f:
                        step, problem = marker_step(f.read(4096))
                    if problem:
                        self._malformed(MARKER_FILE, problem)
                except OSError:
                    step = None
                # The marker's own change time is when the job declared (it writes the marker
                # last; os.replace of a temp marker sets its ctime at that instant).
                found = (step, "marker" if step is not None else None, marker[0] / 1e9)
            now = time.time()
            if found is None:
                return False
            # What the folder holds now, just after the declaration was read: a file whose
            # identity differs at the sync changed after the declaration, whatever its timestamp
            # says (file timestamps may lag the clock by tens of ms here: break test 17).
            seen = dict((e.path, e) for e in scan_tree(self.cfg["checkpointDir"]).files)
            step, source, marked = found
            self.pending_declaration = (step, source, now if marked is None else min(now, marked), seen)
            return True

    def _malformed(self, what, problem):
        """Say once per distinct declaration (agent log and the job's log) that its step was not
        understood: the save still counts, without a step (break9: such declarations were
        ignored without a word)."""
        key = (what, problem)
        if key in self.malformed_seen:
            return
        self.malformed_seen.add(key)
        message = ("checkpoint declaration %s: %s; the save counts, with its step unknown. Valid: %s (docs/checkpoints.md)" % (
            "in the marker file " + MARKER_FILE if what == MARKER_FILE else "line %r" % what[:200], problem, VALID_DECLARATION))
        self.log("warning: " + message)
        self.note("warning: " + message)

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
        state = read_json(self.p("checkpoints.json")) or {}
        previous = state.get("entries") or entries_of({})
        tree = scan_tree(src)
        self._report_refused(tree)
        fp = tree.fingerprint()
        if not tree.files or (fp == state.get("fingerprint") and self.declared is None):
            self.last_left_out = []
            self._not_stalled()
            return None
        self.changed_since_publish = True
        started = time.time()
        candidates, left = self.capture.choose(tree, sid=sid, job_ended=final, clean_exit=final and clean_exit)
        if self.declares_saves and self.declared is None and not final:
            early = self.capture.held_back(left, tree)
            if early[0] or early[1]:
                # A periodic sync of a job that declares its saves, during a save: it would be
                # held back whatever it read (held_back only grows with what reading adds to
                # left), and stage stores the save's large files as the job closes them, so
                # reading them here too would only delay the declaration that follows.
                return self._hold(early[0] + early[1], [], left)
        session = self.store.begin()
        added = self._add_files(session, src, candidates)
        left.extend(added["rejected"])
        # A file deleted while the sync read it is not in this checkpoint, and its Hugging Face
        # folder is not whole any more (the Trainer rotating it away: break test 18 published a
        # checkpoint-50/ of trainer_state.json alone as "step 50"). It holds nothing back.
        left.extend({"path": path, "reason": "%s was deleted while the sync read it" % path, "vanished": True}
                    for path in added["vanished"])
        by_path = dict((f["path"], f) for f in added["accepted"])
        kept, left = self.capture.whole_folders([e for e in candidates if e.path in by_path], left)
        if added["vanished"] and self.declared is not None:
            # The declared save lost files meanwhile: what is published is not what was declared.
            self.log("the save declared at step %s is not published under that step: %s was deleted while the sync read it" % (
                self._declared_step(), added["vanished"][0]))
            self.declared = None
        self._overtaken_since_declared(kept, left, tree)
        held_files, held_entries = self.capture.held_back(left, tree, job_ended=final, declared=self.declared is not None)
        if held_files or held_entries:
            # A save in progress: the new contents are stored (the next sync reuses them), but no
            # checkpoint is published until the save is whole; a declared one is tried again soon.
            session.keep_index()
            return self._hold(held_files + held_entries, held_files, left)
        self.retry_at = None
        self.last_held = None
        files = [by_path[e.path] for e in kept]
        taken = set(f["path"] for f in files)
        # A busy file left out keeps its previously published version (its content is stored and
        # named by that checkpoint's manifest, so nothing is read or uploaded for it).
        old_files = dict((f["path"], f) for f in previous.get("files") or [])
        for item in left:
            old = old_files.get(item["path"])
            if old is not None and item["path"] not in taken and session.reusable(old["sha256"]):
                files.append(dict((k, old[k]) for k in ("path", "size", "sha256", "mode") if k in old))
                taken.add(item["path"])
        files.sort(key=lambda f: f["path"])
        dirs, symlinks = self._folders_and_links(tree, taken, previous)
        if final and clean_exit and self.declared is None and self.last_declared is not None:
            differs = self._differs_from_last_declared(files, symlinks)
            if differs:
                # The job saved again after its last declaration and exited without declaring:
                # the final checkpoint holds that save, not the declared one (break tests 15-17:
                # by content, as cp -p and a folder moved in with mv keep the files' times).
                self.log("the job's last declared step (%s) is not carried to its final checkpoint: %s differs from "
                         "the checkpoint of that declaration" % (self.last_declared[0], differs[0]))
                self.last_declared = None
        self._report_left_out(left)
        complete = not left
        if not files:
            return None
        if entries_equal(previous, files, dirs, symlinks):
            state["fingerprint"] = fp if complete else None
            atomic_write(self.p("checkpoints.json"), json_bytes(state))
            self.declared = None
            self.changed_since_publish = not complete
            if complete:
                self._not_stalled()
            else:
                self._maybe_stalled(left)
            return None
        step, source = self._step_for(files, dirs, symlinks, final and clean_exit)
        manifest = session.publish(files, dirs, symlinks, step=step, step_source=source)
        cid = manifest["id"]
        counts = manifest["sync"]
        uploaded_bytes = counts["bytesUploaded"]
        # Throughput from what this sync itself stored: files stored ahead by stage took their
        # time before it started.
        moved = sum(session.uploaded.values())
        elapsed = max(time.time() - started, 1e-3)
        if moved >= 64 * 1024:  # small syncs measure latency, not throughput
            self.throughput = moved / elapsed
        self.last_uploaded = uploaded_bytes
        ref = ref_of(manifest)
        atomic_write(self.p("checkpoints.json"), json_bytes({"fingerprint": fp if complete else None,
                                                             "entries": entries_of(manifest), "lastCheckpoint": ref}))
        if self.declared is not None and self.declared[0] is not None:
            self.last_declared, self.last_declared_at = self.declared, self.declared_at
            self.last_declared_held = (dict((f["path"], f["sha256"]) for f in files),
                                       dict((s["path"], s["target"]) for s in symlinks))
        elif source not in ("line", "marker"):
            self.last_declared = None
        self.declared = None
        self.last_publish = time.time()
        self.changed_since_publish = not complete
        self._not_stalled()
        self.log("published checkpoint %s (%d files, %d bytes%s; uploaded %d files, %d bytes; reused %d files, %d bytes; "
                 "storage writes by this agent so far: %d bytes%s)" % (
                     cid, ref["files"], ref["bytes"], "" if step is None else ", step %d from %s" % (step, source),
                     counts["filesUploaded"], counts["bytesUploaded"], counts["filesReused"], counts["bytesReused"],
                     self.store.bytes_written, "" if complete else "; left out: " + ", ".join(sorted(set(i["path"] for i in left)))))
        self.note("checkpoint %s published%s" % (cid, "" if step is None else " at step %d" % step))
        self.kept[cid] = ref
        self.retention_due = True  # run by retain_if_due: the checkpoint loop, or the agent's finish
        self.set_status(publish=False, lastCheckpoint=ref, checkpoints=self.kept_list())
        return ref

    def _declared_step(self):
        """The pending declaration's step for messages: the number, or "unknown"."""
        return self.declared[0] if self.declared[0] is not None else "unknown"

    def _hold(self, held, held_files, left):
        """Publish nothing this sync: a save is in progress (held: the reasons, strings; held_files:
        those of files left out, capture.held_back); retried soon. Returns None."""
        if self.declared is not None and held_files:
            # A file is being written after the declaration (the next save began, or the job
            # declared before closing a file of this one): the declaration no longer
            # describes the folder, and no later publish may carry its step, nor the one
            # declared before it.
            self.log("the save declared at step %s could not be published: %s; it is published with the next "
                     "declaration, or by a later sync with its step unknown" % (self._declared_step(), held_files[0]))
            self.declared = None
            self.last_declared = None
        self._report_left_out(left)
        self._maybe_stalled(left)
        self.retry_at = time.monotonic() + max(TICK_SECONDS, self.capture.quiet / 2.0)
        # Retried four times a second while the save lasts: said again only when the files
        # holding it back change (break14: 114 identical lines in 80 s of a mapped file).
        holding = sorted(set(r.split(" ", 1)[0] for r in held))
        if holding != self.last_held:
            self.log("checkpoint sync held back, a save is in progress: %s" % "; ".join(held[:3]))
        self.last_held = holding
        return None

    def stage(self, sid):
        """Store the large files of a save while the job is still writing the rest of it, each
        as soon as the job has closed it, so a declared save then costs its last file and its
        manifest instead of all of it (issue 9, acceptance 3: save -> safe within 1.5x a plain
        copy; on S3 the shards of a multi-GB save upload while the next ones are written).

        The look takes self.lock; the storing does not, so a sync runs meanwhile (the agent calls
        this on a thread of its own): a sync that needs a file being stored here waits for it
        and reuses it (in_flight), and retention waits for the next tick.
        Publishes nothing: which files a checkpoint holds is still decided by the sync
        (capture.py), which reuses a file stored here unread when its identity
        (FileEntry.identity) is unchanged (the store's local index). Only for a job that declares its saves: its next
        declaration publishes what is stored here at once, whereas a job synced every interval
        may rewrite a file many times before a sync and would pay an upload for each. A file is
        taken when it is at least STAGE_FROM_BYTES, no process of the job (session sid) holds it
        open for writing or has ever mapped it shared and writable (needs /proc), it is not
        appended to (a log), its writer did not vanish holding it, the index does not know its
        identity already (under its path, or the one it was renamed from), and it was not tried
        already since the last declaration (one speculative copy per file per save at most:
        written / new stays near 1). The store's copy-then-recheck rejects a file that changes
        while it is read. Returns the number of files stored.
        Raises StorageError (the caller treats it as a failed sync)."""
        if not self.declares_saves or sid is None or not proc_available() or process_gone(sid):
            return 0  # a job that ended may have died mid-save: its final sync judges its files
        with self.lock:
            looked = time.monotonic()
            src = self.cfg["checkpointDir"]
            tree = scan_tree(src)
            capture = self.capture
            capture.observe(tree)
            index = self.store.load_index()
            # Moved identities: a file renamed into place since it was stored is known too.
            known = set(tuple((v.get("identity") or [])[:4]) for v in index.values() if isinstance(v, dict))
            todo = [e for e in tree.files
                    if e.size >= STAGE_FROM_BYTES and e.path not in capture.appended
                    and e.path not in capture.suspect and e.path not in capture.mapped and e.path not in self.staged
                    and tuple(e.moved_identity()) not in known]  # stored already, under this path or the one it was renamed from
            if todo:
                # Looked at again after the scan, and each file's identity taken after that look: a
                # file the job closed in between is taken as it is now, not as the scan saw it
                # being written (which the copy-then-recheck would refuse as changed).
                capture.watch(sid)
                busy = set(capture.writing) | set(capture.mapped_now())
                todo = [fresh for fresh in (restat(src, e) for e in todo if e.path not in busy)
                        if fresh is not None and fresh.size >= STAGE_FROM_BYTES]
            self.stage_look_seconds = time.monotonic() - looked
            if not todo:
                return 0
            for e in todo:
                self.staged[e.path] = e.identity()
            session = self.store.begin()
            # Registered under the lock, so retention (which also takes it) never runs while
            # these contents are stored and not yet protected by self.store.unpublished.
            flight = self.in_flight = StageFlight(todo)
        # Stored outside the lock: a declaration that comes now is synced at once, storing the
        # save's other files beside this one and then reusing this one (_add_files), instead of
        # waiting for it first (issue 9, acceptance 3: the wait was most of a slow save's time).
        started = time.time()
        try:
            added = session.add_files(src, todo)
            session.keep_index()
        finally:
            self.in_flight = None  # never under self.lock: a sync holding it may be waiting for this
            flight.done.set()
        if not added["accepted"] and not added["rejected"]:
            return 0  # deleted since the scan (a job rotating its old checkpoints)
        stored = sum(f["size"] for f in added["accepted"])
        moved = sum(session.uploaded.values())
        if moved >= 64 * 1024:
            self.throughput = moved / max(time.time() - started, 1e-3)
        self.log("stored %d file%s of a save in progress ahead of its declaration (%d bytes, %d uploaded)%s" % (
            len(added["accepted"]), "" if len(added["accepted"]) == 1 else "s", stored, moved,
            "" if not added["rejected"] else "; not stored: " + "; ".join(r["reason"] for r in added["rejected"][:3])))
        return len(added["accepted"])

    def _add_files(self, session, src, candidates):
        """session.add_files of candidates (checkpoint_tree.FileEntry), the files stage is storing
        now (same identity) last: the others are stored meanwhile, then those are reused from what
        stage stored, unread. Same result shape as SyncSession.add_files."""
        flight = self.in_flight
        waiting, now = [], []
        for e in candidates:
            (waiting if flight is not None and flight.carries(e) else now).append(e)
        if not waiting:
            return session.add_files(src, candidates, reread=self.capture.mapped)
        first = session.add_files(src, now, reread=self.capture.mapped)
        flight.done.wait()
        session.catch_up()
        then = session.add_files(src, waiting, reread=self.capture.mapped)
        return {"accepted": sorted(first["accepted"] + then["accepted"], key=lambda f: f["path"]),
                "rejected": sorted(first["rejected"] + then["rejected"], key=lambda r: r["path"]),
                "vanished": sorted(first["vanished"] + then["vanished"])}

    def stage_interval(self):
        """Seconds until the next look for a save's finished files: STAGE_TICK_SECONDS, or ten
        times what the last look cost (a folder of thousands of files), so looking takes at most
        about a tenth of a core."""
        return max(STAGE_TICK_SECONDS, 10 * self.stage_look_seconds)

    def _overtaken_since_declared(self, kept, left, tree):
        """Drop the declaration pending publication when the checkpoint this sync would publish
        does not hold the declared save: a file it publishes (kept: checkpoint_tree.FileEntry)
        changed after the declaration was seen, so the next save has begun (break14: a job that
        declared step 1 and rewrote its state file at once got a 'step 1' checkpoint holding
        step 2's state); or a file it leaves out without holding the sync back (left:
        [{"path", ...}]) is busy only because it kept changing for BUSY_SECONDS, which a model
        saved more often than the quiet time also does (break test 15). Logs and status files
        (Capture.outside_saves) are no part of a save, and a Hugging Face checkpoint-<N>/ folder
        the next save is filling is not published until it is whole. A file written within the
        clock's granularity after the declaration cannot be told from one written just before it."""
        if self.declared is None or self.declared_at is None:
            return
        paths = set(e.path for e in tree.files)
        after = self._changed_after(kept, self.declared_at, tree) or self._changed_since_seen(kept) or [
            item["path"] for item in left
            if not item.get("folder") and not self.capture.outside_saves(item["path"])
            and not next_save_folder(item["path"], paths)]
        if after:
            self.log("the save declared at step %s could not be published: %s changed after the declaration (the next save "
                     "began); it is published with the next declaration, or by a later sync with its step unknown" % (
                         self.declared[0] if self.declared[0] is not None else "unknown", after[0]))
            self.declared = None
            self.last_declared = None

    def _changed_after(self, kept, at, tree):
        """Paths of the files this sync would publish (kept: checkpoint_tree.FileEntry) changed
        after `at` (epoch seconds), or under a folder (not the root) created, renamed or changed
        after it: `mv` of a folder into place keeps its files' mtimes and ctimes (break test 17).
        The marker, logs and status files (Capture.outside_saves) are no part of a save and do
        not count."""
        capture = self.capture
        folder_times = dict(tree.entry_mtimes())

        def folder_changed(path):
            parts = path.split("/")[:-1]
            return any(folder_times.get("/".join(parts[:i + 1]), 0) > at for i in range(len(parts)))

        return [e.path for e in kept if (e.changed_ns / 1e9 > at or folder_changed(e.path)) and e.path != MARKER_FILE
                and not capture.outside_saves(e.path)]

    def _changed_since_seen(self, kept):
        """Paths of the files this sync would publish (kept: FileEntry) that the scan made just
        after the pending declaration was read did not find, found being truncated, or found
        with another identity: changed after the declaration, even with an older timestamp.
        The marker, logs and status files excepted; [] when no scan was made (a test's direct
        declaration)."""
        declared, seen = self.declared_seen
        if declared is not self.declared or seen is None:
            return []
        out = []
        for e in kept:
            if e.path == MARKER_FILE or self.capture.outside_saves(e.path):
                continue
            was = seen.get(e.path)
            if was is None or was.truncating or was.identity() != e.identity():
                out.append(e.path)
        return out

    def _differs_from_last_declared(self, files, symlinks):
        """Paths of this checkpoint's files (manifest entries) and links whose content or target
        is not that of the checkpoint the newest declaration was published with, or that only
        one of them has; the marker, logs and status files (Capture.outside_saves) excepted."""
        held_files, held_links = self.last_declared_held
        now_files = dict((f["path"], f["sha256"]) for f in files)
        now_links = dict((s["path"], s["target"]) for s in symlinks)
        out = []
        for now, held in ((now_files, held_files), (now_links, held_links)):
            for path in sorted(set(now) | set(held)):
                if now.get(path) != held.get(path) and path != MARKER_FILE and not self.capture.outside_saves(path):
                    out.append(path)
        return out

    def retry_due(self):
        """True when a sync was held back by a save in progress and it is time to try again (the
        checkpoint loop then syncs without waiting for the interval)."""
        return self.retry_at is not None and time.monotonic() >= self.retry_at

    def retain_if_due(self, yield_to_saves=True):
        """Retention after a periodic or declared sync, run by the checkpoint loop on a tick with
        no save waiting, so retiring old checkpoints (and, now and then, collecting their
        contents: several storage listings) never holds up the next save's upload: it stops
        between storage calls when the job declares a save (yield_to_saves; not after the job
        ended), and the rest is done on a later tick."""
        with self.lock:
            if self.retention_due and self.in_flight is None:
                self._retain(should_yield=self._save_waiting if yield_to_saves else None)
                self.set_status(publish=False, checkpoints=self.kept_list())

    def _retain(self, should_yield=None):
        for gone in self.store.retain(self.retention_keep(), should_yield=should_yield):
            self.kept.pop(gone, None)
        self.retention_due = self.store.yielded

    def _save_waiting(self):
        """Asked by retention between its storage calls: True when the job has declared a save
        since (retention stops, and the checkpoint loop syncs at once)."""
        if self.tick(None):
            self.retry_at = time.monotonic()
            return True
        return False

    def retention_keep(self):
        """How many of the newest published checkpoints store.retain keeps: the newest `keep`
        that no evidence names, and every one newer than those. Not counted: checkpoints earlier
        attempts' evidence names (known not to resume), and, while this attempt has published no
        newer training state than the checkpoint it restored, that checkpoint and the ones this
        attempt published (if it fails, they are evidence; the checkpoint a fallback restores must
        still be there). Raises StorageError."""
        keep = self.cfg["keep"]
        excluded = set(self.avoided_ids) | set(self.suspect_ids())
        if not excluded:
            return keep
        published = self.store.current_view()["published"]
        counting = [c for c in published if c not in excluded]
        if len(counting) <= keep:
            return max(keep, len(published))
        oldest = counting[-keep]
        return len([c for c in published if c >= oldest])

    def suspect_ids(self):
        """[restored id, ids this attempt published] while none of those holds newer training
        state than the restored checkpoint (resume_evidence.holds_newer_state); [] once one does
        (then this attempt's failure is no evidence), or when nothing of this generation was
        restored. Raises StorageError."""
        if self.resume_base is None:
            return []
        base_id, base = self.resume_base
        gen = self.cfg["generation"]
        own = published_by(lambda c: self._manifest(gen, c), self.store.current_view()["published"], self.cfg["attempt"], base_id)
        for cid in own:
            if cid in self.judged:
                continue
            self.judged.add(cid)
            later = self._manifest(gen, cid)
            if isinstance(later, dict) and holds_newer_state(base, later, self._prefix_sha256):
                self.log("checkpoint %s holds newer training state than the restored %s: a failure of this attempt is no longer "
                         "evidence against it" % (cid, base_id))
                self.resume_base = None
                return []
        return [base_id] + own

    def adopt_restored(self, restored_from):
        """For an agent that adopted the running job after a restart: take back what the dead one
        knew for retention_keep, from the job's launch record's restoredFrom (RestoredFrom), so a
        restart does not make a failing attempt's checkpoints retire its fallback."""
        if not isinstance(restored_from, dict) or restored_from.get("generation") not in (None, self.cfg["generation"]):
            return
        cid = restored_from.get("id")
        manifest = self._manifest(self.cfg["generation"], cid) if isinstance(cid, str) else None
        if isinstance(manifest, dict):
            self.resume_base = (cid, manifest)
        self.avoided_ids = set(a["id"] for a in restored_from.get("avoided") or [] if isinstance(a, dict) and isinstance(a.get("id"), str))

    def _manifest(self, generation, cid):
        try:
            return self.store.manifest(generation, cid)
        except (StorageError, OSError):
            return None

    def _prefix_sha256(self, entry, n):
        """sha256 (hex) of the first n bytes of the stored content of file entry, or None."""
        try:
            data = self.storage.get_bytes(self.store.content_key(entry["sha256"]))
        except (StorageError, OSError):
            return None
        return None if data is None else sha256_prefix(data, n)

    def _folders_and_links(self, tree, taken, previous):
        """The folders and inner links a checkpoint records: all of the tree's, except those in
        a Hugging Face checkpoint-<N>/ folder that is not published whole (its trainer_state.json
        is not among the files), which the previous checkpoint's entries stand in for."""
        def incomplete(path):
            return next_save_folder(path + "/x", taken)
        old_dirs = dict((d["path"], d) for d in previous.get("dirs") or [])
        old_links = dict((s["path"], s) for s in previous.get("symlinks") or [])
        dirs, links = [], []
        for d in tree.dirs:
            if not incomplete(d["path"]):
                dirs.append(d)
            elif d["path"] in old_dirs:
                dirs.append(old_dirs[d["path"]])
        for link in tree.symlinks:
            if not incomplete(link["path"]):
                links.append(link)
            elif link["path"] in old_links:
                links.append(old_links[link["path"]])
        return dirs, links

    def _report_refused(self, tree):
        """Links leading out of the folder (and sockets, fifos, devices) are never published: say
        so in the agent log and the job's log once each, and as a fault while any is there."""
        for r in tree.refused:
            if r["path"] not in self.refused_seen:
                self.refused_seen.add(r["path"])
                self.log("checkpoint: refused %s" % r["reason"])
                self.note("warning: %s; it is left out of every checkpoint" % r["reason"])
        if self.faults is None:
            return
        if tree.refused:
            first = tree.refused[0]
            self.faults.report(FAULT_REFUSED, "%s; it is left out of every checkpoint. Make links in RUNCTL_CHECKPOINT_DIR relative "
                               "and inside it, or copy the file in%s" % (
                                   first["reason"], "" if len(tree.refused) == 1 else " (%d entries refused)" % len(tree.refused)),
                               file=first["path"])
        else:
            self.faults.clear(FAULT_REFUSED)

    def _step_for(self, files, dirs, symlinks, clean_final):
        """(step, source) the checkpoint holds: declared with this save; else read from the layout
        (steps.published_step: a Lightning folder with a last.ckpt gives the step that file holds,
        or none when it is a copy matching no step=N file, brk20 F4); else, in the final sync
        after a clean exit, the step the newest checkpoint of this attempt was declared at; else
        (None, None)."""
        if self.declared is not None and self.declared[0] is not None:
            return self.declared
        step, source = published_step(files, [d["path"] for d in dirs], symlinks)
        if step is not None:
            return step, source
        if clean_final and self.last_declared is not None:
            return self.last_declared
        return None, None

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
        known = set((f["path"], f["size"]) for f in (state.get("entries") or {}).get("files") or [])
        return sum(e.size for e in scan_tree(self.cfg["checkpointDir"]).files if (e.path, e.size) not in known)

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
        _, _, published = self.store.ids(generation)
        if not published:
            return None
        newest = published[-1]
        failure = None
        avoided = {}
        if generation == self.cfg["generation"]:
            evidence = avoided_checkpoints(self.storage, run_prefix(self.cfg), generation, self.cfg["attempt"], published,
                                           lambda c: self._manifest(generation, c), self._prefix_sha256)
            avoided = dict((cid, evidence[cid]) for cid in published if cid in evidence)
            self.avoided_ids = set(avoided)
            for a in sorted(avoided.values(), key=lambda a: a["id"], reverse=True):
                self.log("not restoring checkpoint g%d/%s: %s" % (generation, a["id"], evidence_text(a)))
        tried = []
        target = self.cfg["checkpointDir"]
        for cid in reversed(published):
            if self.stopping():
                return None
            if cid in avoided:
                a = avoided[cid]
                tried.append("%s (attempt %d%s: %s)" % (
                    cid, a["attempt"], ", published from %s" % a["descendsFrom"] if a.get("descendsFrom") else "", a["reason"]))
                if failure is None:
                    failure = (cid, evidence_text(a))
                continue
            # Every file is downloaded (in parallel) and checked against its size and sha256
            # before the folder is swapped in; a checkpoint that fails leaves target untouched.
            manifest, reason = restore_checkpoint(self.store, generation, cid, target, self.p("restore"))
            if manifest is None:
                self.log("checkpoint g%d/%s failed verification: %s" % (generation, cid, reason))
                tried.append("%s (failed verification: %s)" % (cid, reason))
                if failure is None:
                    failure = (cid, reason)
                continue
            ref = ref_of(manifest, cid)
            own = generation == self.cfg["generation"]
            if manifest.get("stepSource") in ("line", "marker"):
                self.declares_saves = True  # the job declares its saves: store them as it writes (stage)
            if own:
                self.kept[cid] = ref
                self.resume_base = (cid, manifest)
                try:
                    kept = published[-self.retention_keep():]
                except (StorageError, OSError):
                    kept = published[-self.cfg["keep"]:]
                self._remember_published(generation, [c for c in kept if c != cid])
            else:
                # Contents are stored once per run: the seed's are reused, not uploaded again,
                # while its manifest stays published (checkpoint_store.SyncSession.refresh).
                self.store.pin(generation, cid)
            # The restored files' identities, so the first sync reads none of them again.
            self.store.remember(target, manifest.get("files") or [])
            restored_from = {"id": cid}
            if not own:
                restored_from["generation"] = generation
            if failure is not None:
                restored_from["fallbackFrom"] = failure[0]
                restored_from["reason"] = failure[1]
            passed_over = [a for a in avoided.values() if a["id"] > cid]  # older ones were not in the way
            if passed_over:
                restored_from["avoided"] = sorted(passed_over, key=lambda a: a["id"], reverse=True)
            self.log("restored checkpoint g%d/%s (%d files%s)" % (
                generation, cid, ref["files"], "" if manifest.get("format") == 2 else ", written in the layout before content-addressed storage"))
            self.note("restored checkpoint %s of generation %d%s" % (
                cid, generation, "" if failure is None else " (newest %s %s: %s)" % (
                    failure[0], "ruled out" if failure[0] in avoided else "failed verification", failure[1])))
            # Files restored from a seed generation are not in this generation yet: the first
            # checkpoint this generation publishes carries them along with whatever the job changed.
            self.remember_dir(entries_of(manifest) if own else None, ref if own else None)
            self.set_status(restoredFrom=restored_from, lastCheckpoint=ref if own else None,
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
        """The kept checkpoints' refs (for `describe`), from their manifests: those of `published`
        (the ones retention keeps besides the restored one, retention_keep)."""
        for cid in published:
            try:
                manifest = self.store.manifest(generation, cid)
            except (StorageError, OSError):
                manifest = None
            if isinstance(manifest, dict) and isinstance(manifest.get("files"), list):
                try:
                    self.kept[cid] = ref_of(manifest, cid)
                except (KeyError, TypeError):
                    pass


class StageFlight(object):
    """The files one Checkpoints.stage call is storing: {path: FileEntry.identity()}, and an
    Event set once it is done (stored, rejected or failed)."""

    def __init__(self, entries):
        self.identities = dict((e.path, e.identity()) for e in entries)
        self.done = threading.Event()

    def carries(self, entry):
        """True when entry (FileEntry) is being stored by this flight as it is now."""
        return self.identities.get(entry.path) == entry.identity()


def evidence_text(a):
    """Why an avoided checkpoint (resume_evidence.avoided_checkpoints entry) is not restored."""
    if a.get("descendsFrom"):
        return "attempt %d published it after restoring %s and failed without saving newer training state (%s)" % (
            a["attempt"], a["descendsFrom"], a["reason"])
    return "attempt %d restored it and failed before publishing a newer one (%s)" % (a["attempt"], a["reason"])


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
