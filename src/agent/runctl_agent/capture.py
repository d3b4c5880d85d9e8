"""Which files of the checkpoint folder a sync may publish, decided per file (issue 9: "never
publish a file the job may still be writing").

A file is left out of a sync when any of these says the job may still be writing it:
  1. it is open for writing in one of the job's processes: /proc/<pid>/fd/<n> resolves to it and
     /proc/<pid>/fdinfo/<n> `flags` has O_WRONLY or O_RDWR (every process of the job's session,
     so data-loader workers and torchrun's children count);
  2. it was open for writing the last time we looked before the job ended, and the job did not
     exit 0 (killed mid-save: torch.save truncates first, so the file is a prefix of the new state);
  3. it changed within the last `quiet_seconds` (quiescence; the only test where /proc is absent),
     unless the job declared the save complete after that change;
  4. the store's copy-then-recheck saw it change while it was copied (checkpoint_store.py).
Hugging Face `checkpoint-<N>/` folders are whole or absent: a folder with a file left out, or
without `trainer_state.json` (the Trainer writes it last), is left out entirely, so the job never
resumes from half a folder. A file left out keeps its previously published version, when there is
one (the caller carries that entry over), so the newest complete state of every file stays.

Files that keep being left out (a metrics file appended every few milliseconds) are reported, so
the caller can name them in a CheckpointFileBusy fault instead of blocking every sync.
"""

import os
import time

from .steps import MARKER_FILE, hf_folder

O_ACCMODE = 0o3
HF_COMPLETE_FILE = "trainer_state.json"


def session_pids(sid):
    """Pids whose session id is sid (the job runs in its own session), from /proc; [] without /proc."""
    out = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return out
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name, "rb") as f:
                stat = f.read().decode("ascii", "replace")
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[3]) == sid:
                out.append(int(name))
        except (OSError, ValueError, IndexError):
            continue
    return out


def open_for_writing(pids, root):
    """{relative path under root: pid} of files open for writing by any of pids."""
    root = os.path.realpath(root)
    prefix = root.rstrip("/") + "/"
    out = {}
    for pid in pids:
        fd_dir = "/proc/%d/fd" % pid
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(os.path.join(fd_dir, fd))
            except OSError:
                continue
            if not target.startswith(prefix):
                continue
            if target.endswith(" (deleted)"):
                continue
            try:
                with open("/proc/%d/fdinfo/%s" % (pid, fd), "r") as f:
                    flags = None
                    for line in f:
                        if line.startswith("flags:"):
                            flags = int(line.split()[1], 8)
                            break
            except (OSError, ValueError, IndexError):
                continue
            if flags is not None and flags & O_ACCMODE in (os.O_WRONLY, os.O_RDWR):
                out[target[len(prefix):]] = pid
    return out


def proc_available():
    return os.path.isdir("/proc/self/fd")


class Capture(object):
    """Per-file decisions for one attempt's checkpoint folder.

    root: the checkpoint folder; quiet_seconds: how long a file must be unchanged (mtime) before a
    periodic sync takes it; busy_after: how many syncs in a row a file may be left out before it is
    reported as busy. watch(sid) is called often (every few hundred ms) while the job runs, so
    short writes are seen; choose() is called by each sync.
    """

    def __init__(self, root, quiet_seconds=1.0, busy_after=2, clock=time.time):
        self.root = root
        self.quiet = quiet_seconds
        self.busy_after = busy_after
        self.clock = clock
        self.writing = {}  # path -> pid seen holding it open for writing at the last look
        self.suspect = {}  # path -> pid of a writer that died holding it open (killed mid-save)
        self.left_out = {}  # path -> {"count", "since", "reason"}
        self.declared_at = None  # time of the newest save the job declared

    def watch(self, sid):
        """One look at the job's open files; returns {path: pid} open for writing now."""
        if sid is None or not proc_available():
            return {}
        current = open_for_writing(session_pids(sid), self.root)
        for path, pid in list(self.writing.items()):
            if path not in current and not os.path.exists("/proc/%d" % pid):
                # Its writer died holding it open: killed mid-save, whatever its size says now.
                self.suspect[path] = pid
        for path in current:
            self.suspect.pop(path, None)  # a new write started; judge it when it ends
        self.writing = dict(current)
        return current

    def declared(self, at=None):
        """The job said its checkpoint is complete (line or marker): files changed before `at` need
        no quiescence."""
        self.declared_at = self.clock() if at is None else at

    def choose(self, tree, sid=None, job_ended=False, clean_exit=False):
        """Split tree.files (checkpoint_tree.FileEntry, from checkpoint_tree.scan_tree) into
        (candidates, left_out).

        sid: the job's session id while it runs (None once it ended); job_ended/clean_exit: the
        final sync after the job ended, and whether it exited 0. left_out: [{"path", "reason"}].
        """
        now = self.clock()
        open_now = self.watch(sid) if (sid is not None and not job_ended) else {}
        candidates, left = [], []
        for entry in tree.files:
            reason = None
            if entry.path in open_now:
                reason = "%s is open for writing by the job (pid %d)" % (entry.path, open_now[entry.path])
            elif entry.path in self.suspect and not (job_ended and clean_exit):
                reason = "%s was being written by pid %d, which died before closing it (killed mid-save)" % (entry.path, self.suspect[entry.path])
            elif job_ended and not clean_exit and entry.path in self.writing:
                reason = "%s was still open for writing when the job ended (killed mid-save)" % entry.path
            elif not job_ended and entry.path != MARKER_FILE:
                age = now - entry.mtime_ns / 1e9
                declared = self.declared_at is not None and entry.mtime_ns / 1e9 <= self.declared_at
                if age < self.quiet and not declared:
                    reason = "%s changed %.1fs ago (a file must be unchanged for %.1fs)" % (entry.path, max(age, 0.0), self.quiet)
            if reason:
                left.append({"path": entry.path, "reason": reason})
            else:
                candidates.append(entry)
        return self.whole_folders(candidates, left)

    def whole_folders(self, candidates, left):
        """Hugging Face checkpoint-<N>/ folders are taken whole or not at all."""
        by_folder = {}
        for e in candidates:
            folder, _ = hf_folder(e.path)
            if folder:
                by_folder.setdefault(folder, []).append(e)
        incomplete = set()
        for item in left:
            folder, _ = hf_folder(item["path"])
            if folder:
                incomplete.add(folder)
        for folder, entries in by_folder.items():
            if not any(e.path == folder + "/" + HF_COMPLETE_FILE for e in entries):
                incomplete.add(folder)
        if not incomplete:
            return candidates, left
        kept = []
        for e in candidates:
            folder, _ = hf_folder(e.path)
            if folder in incomplete:
                left.append({"path": e.path, "reason": "%s/ is not complete yet (%s missing or a file still being written)" % (folder, HF_COMPLETE_FILE),
                             "folder": folder})
            else:
                kept.append(e)
        return kept, left

    def rejected(self, path, reason):
        """The store refused a file (changed while copied): count it as left out."""
        return {"path": path, "reason": reason}

    def record(self, left):
        """After a sync: remember what was left out; returns the files left out `busy_after` syncs in
        a row ([{"path","reason","since","count"}]), and forgets files that were taken."""
        now = self.clock()
        paths = set()
        for item in left:
            if item.get("folder"):
                continue  # a whole folder waiting for its last file is not busy, just not done
            paths.add(item["path"])
            prev = self.left_out.get(item["path"])
            self.left_out[item["path"]] = {"count": (prev["count"] + 1) if prev else 1,
                                            "since": prev["since"] if prev else now, "reason": item["reason"]}
        for p in list(self.left_out):
            if p not in paths:
                del self.left_out[p]
        return [dict(path=p, **v) for p, v in sorted(self.left_out.items()) if v["count"] >= self.busy_after]
