"""Which files of the checkpoint folder a sync may publish, decided per file (issue 9: "never
publish a file the job may still be writing").

A file is left out of a sync when any of these says the job may still be writing it:
  1. it is open for writing in one of the job's processes: /proc/<pid>/fd/<n> resolves to it and
     /proc/<pid>/fdinfo/<n> `flags` has O_WRONLY or O_RDWR (every process of the job: its
     session and every process descended from it, processes.JobProcesses, so data-loader workers
     and torchrun's workers, which run in sessions of their own, count), or one of them maps it shared and
     writable (/proc/<pid>/maps; such a file is also never reused by its identity afterwards);
  2. the job did not exit 0 and the file was open for writing at the last look before it ended,
     or its writer vanished holding it (killed mid-save: torch.save truncates first, so the file
     is a prefix of the new state). While the job runs, a writer that exits (a child process that
     `cp`s or saves, then exits 0) is not suspected: its file is judged by the rules here;
  3. it was open for writing when the stop signal (a notice, a stop) was sent, and the job did not
     declare a save after the signal: a handler that exits at once (`sys.exit(0)`, a
     KeyboardInterrupt) closes a half-written file as surely as a kill does;
  3a. the agent killed the job (the grace period's SIGKILL; processes outliving a leader that
     exited 0) while the file was open for writing (a look just before the kill), or it changed
     after that look; or the job died on its own (exit code not 0) within CUT_WINDOW_SECONDS of
     the file's last change, with no save declared after it. A write shorter than the time
     between two looks is never seen open by the periodic looks (break test 17: a crash 20 ms
     into rewriting a file, a SIGKILL 30 ms into a save begun in a handler, and a child killed
     mid-write each got the prefix published);
  3b. a scan saw it get shorter (truncated: emptied, or cut to any shorter size) within
     CUT_WINDOW_SECONDS (plus the time truncating its old size can take) of the stop signal or a
     kill or death, or after, it is still shorter than it was, and no save was declared after its
     change: open(path, "wb") truncates inside the system call, before the job holds a descriptor
     any look can see, and a handler that exits then (or that calls os.truncate, or rewrites less
     than was there) leaves the file cut short, the exit code 0 (break tests 18 and 19; the
     timestamp is when the truncation began, and lags the clock by tens of ms here);
  4. it changed within the last `quiet_seconds` (quiescence; the only test where /proc is absent),
     unless the job declared the save complete after that change;
  5. the store's copy-then-recheck saw it change while it was copied (checkpoint_store.py).
Hugging Face `checkpoint-<N>/` folders are whole or absent: a folder with a file left out, or
without `trainer_state.json` (the Trainer writes it last), is left out entirely, so the job never
resumes from half a folder.

A save in progress holds the whole sync back (held_back): publishing the other files would make a
checkpoint that never existed on disk (a Lightning `last.ckpt` naming a file not in it, a
DeepSpeed `latest` naming a folder half written, a declared step holding the previous step's
model). Only a *busy* file is left out while the rest is published, keeping its previously
published version: a file seen open for appending (O_APPEND: logs, metrics.jsonl), or one left out
by `busy_after` syncs in a row over at least BUSY_SECONDS (a status file rewritten every few
milliseconds). Busy files are reported, so the caller can name them in a CheckpointFileBusy fault
instead of blocking every sync.

A save the job declares describes the files as they were when it declared. A file that changed
after the declaration is part of the next save, so the declared step cannot be published with it
left out, unless it is not part of any save: appended to (a log), only growing in place (a log
reopened for every line), or *churning*: younger than CHURN_AGE_SECONDS and not open for writing at every
look for at least CHURN_SPAN_SECONDS since the previous declaration (a status file rewritten
every few ms; a large save in progress is young at every look too, but seen open). Being left out
by an earlier sync is no such evidence (break test 15: a model saved again 5 ms after each
declaration, then idle, was left out once and then every later declared checkpoint held only the
marker, labelled with its step). A file busy only by the BUSY_SECONDS rule may be the job's
model rewritten more often than the quiet time: the sync is not held back by it, but the
declared step is not given to that checkpoint.
"""

import os
import threading
import time

from .checkpoint_tree import FileEntry
from .processes import JobProcesses
from .steps import MARKER_FILE, hf_folder

O_ACCMODE = 0o3
HF_COMPLETE_FILE = "trainer_state.json"
# How long a file must keep being left out before it is busy rather than a save in progress: a
# save of a large model to a slow volume takes tens of seconds (10 GB at EBS gp3's 125 MB/s: 80 s).
BUSY_SECONDS = 120.0
# A file younger than this and not open for writing at every look (the agent looks every 0.1-0.25
# s) for at least CHURN_SPAN_SECONDS, over at least CHURN_LOOKS looks, is rewritten continuously:
# a status file, not a save. A save followed by an idle pause, even a short one, ages past it
# between looks; a long save is seen open.
CHURN_AGE_SECONDS = 0.25
CHURN_SPAN_SECONDS = 0.5
CHURN_LOOKS = 3
EDGE_BYTES = 64  # read at each end of a file that only grows, to tell a log from a growing save
# How long before the job was killed or died a file must have last changed to be trusted without a
# declaration: longer than the time between two looks at its open files (0.1-0.25 s, more under load).
CUT_WINDOW_SECONDS = 1.0
# Rule 3b: bytes a truncation frees per second, at the slowest we allow for (measured here: 128 MiB
# in ~25 ms, about 5 GB/s; a cold EBS volume is slower), so a 10 GB checkpoint's looks back 100 s.
TRUNCATE_BYTES_PER_SECOND = 100 * 1000 * 1000


def next_save_folder(path, paths):
    """True when path lies in a Hugging Face checkpoint-<N>/ folder without its trainer_state.json
    among paths (the tree's file paths): the next save being written, taken whole or not at all."""
    folder, _ = hf_folder(path)
    return bool(folder) and folder + "/" + HF_COMPLETE_FILE not in paths


def open_for_writing(pids, root, appending=None):
    """{relative path under root: pid} of files open for writing by any of pids. appending: a set
    that receives the paths open with O_APPEND (a log, never a checkpoint save)."""
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
                if appending is not None and flags & os.O_APPEND:
                    appending.add(target[len(prefix):])
    return out


def mapped_for_writing(pids, root):
    """{relative path under root: pid} of files any of pids maps shared and writable
    (/proc/<pid>/maps: permissions `rw?s`). Such a file can change with no descriptor open
    (torch.from_file(shared=True) closes its fd after mmap) and without its mtime moving, so
    neither open_for_writing nor the file's identity shows the change."""
    root = os.path.realpath(root)
    prefix = root.rstrip("/") + "/"
    out = {}
    for pid in pids:
        try:
            with open("/proc/%d/maps" % pid, "r") as f:
                for line in f:
                    fields = line.split(None, 5)
                    if len(fields) < 6 or fields[1][1] != "w" or fields[1][3] != "s":
                        continue
                    path = fields[5].rstrip("\n")
                    if path.startswith(prefix) and not path.endswith(" (deleted)"):
                        out[path[len(prefix):]] = pid
        except (OSError, IndexError):
            continue
    return out


def process_gone(pid):
    """True when pid has exited: no /proc entry, or a zombie (state Z or X) that its parent has not
    reaped yet, as a SIGKILLed group's processes are for a while."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            stat = f.read().decode("ascii", "replace")
        return stat[stat.rindex(")") + 2:].split()[0] in ("Z", "X")
    except (OSError, ValueError, IndexError):
        return True


def proc_available():
    return os.path.isdir("/proc/self/fd")


class Capture(object):
    """Per-file decisions for one attempt's checkpoint folder.

    root: the checkpoint folder; quiet_seconds: how long a file must be unchanged (its change
    time, FileEntry.changed_ns: the later of mtime and ctime) before a
    periodic sync takes it; busy_after: how many syncs in a row a file may be left out before it is
    reported as busy. watch(sid) is called often (every few hundred ms) while the job runs, so
    short writes are seen; choose() is called by each sync.
    """

    def __init__(self, root, quiet_seconds=1.0, busy_after=2, clock=time.time, processes=None):
        self.root = root
        self.processes = processes if processes is not None else JobProcesses()  # whose files are watched
        self.quiet = quiet_seconds
        self.busy_after = busy_after
        self.clock = clock
        self.writing = {}  # path -> pid seen holding it open for writing at the last look
        self.suspect = {}  # path -> pid of a writer that vanished holding it (judged at the job's end)
        self.appended = set()  # paths seen open with O_APPEND: logs, busy by nature
        self.rewritten = set()  # paths seen open for writing without O_APPEND: checkpoint saves
        self.growth = {}  # path -> (size at the last sync that left it out, syncs it grew in place, its edges)
        self.vanished_after_signal = set()  # paths whose writer vanished after the stop signal
        self.left_out = {}  # path -> {"count", "since", "reason"}
        self.declared_at = None  # time of the newest save the job declared
        self.signalled_at = None  # time the stop signal was sent
        self.open_at_signal = {}  # path -> pid open for writing when it was sent
        self.pids = []  # the job's processes at the last look
        self.mapped = set()  # paths ever seen mapped shared and writable: never reused by identity
        self.churn = {}  # path -> {"since", "last", "looks"}: looks in a row that found it young
        self.churning = set()  # paths churning up to the newest declaration: not part of its save
        self.open_since = {}  # path -> first look of the unbroken run of looks that found it open for writing
        self.held_open = set()  # paths held open for writing across the two newest declarations: not a save in progress
        self.cut_at = []  # [(epoch s, lookback s)]: the job was killed or died; writes since may be cut short
        self.open_at_kill = set()  # paths open for writing in the look just before the agent killed the job
        self.last_size = {}  # path -> its size in bytes when a scan last saw it (rule 3b)
        self.shortened = {}  # path -> (change time in ns, size before) when a scan saw it get shorter (rule 3b)
        self.look_lock = threading.Lock()  # watch

    def watch(self, sid):
        """One look at the job's open files; returns {path: pid} open for writing now. Looks
        from two threads (the checkpoint loop's tick, the stager) are taken one at a time: a
        look from an older /proc snapshot finishing last would clear a writer's vanishing."""
        if sid is None or not proc_available():
            return {}
        with self.look_lock:
            return self._watch(sid)

    def _watch(self, sid):
        appending = set()
        self.pids = self.processes.pids(sid)
        current = open_for_writing(self.pids, self.root, appending)
        self.appended |= appending
        self.rewritten |= set(current) - appending
        for path, pid in list(self.writing.items()):
            if path not in current and process_gone(pid):
                # Its writer vanished holding it open: killed mid-save if the job dies too, or
                # if the stop signal (or the kill after it) has been sent.
                self.suspect[path] = pid
                if self.signalled_at is not None:
                    self.vanished_after_signal.add(path)
        for path in current:
            self.suspect.pop(path, None)  # a new write started; judge it when it ends
            self.vanished_after_signal.discard(path)
        self.writing = dict(current)
        now = self.clock()
        self.open_since = dict((path, self.open_since.get(path, now)) for path in current)
        self._look_for_churn(current)
        return current

    def _look_for_churn(self, current):
        """Extend or end each watched file's run of looks that found it younger than
        CHURN_AGE_SECONDS. Watched: files open for writing now, files the last sync left out,
        files a scan found young (observe), and files already in a run; a handful of stats per
        look."""
        now = self.clock()
        for path in set(current) | set(self.left_out) | set(self.churn):
            try:
                st = os.stat(os.path.join(self.root, path))
            except OSError:
                self.churn.pop(path, None)
                continue
            if now - FileEntry.of(path, st).changed_ns / 1e9 >= CHURN_AGE_SECONDS or path in current or path in self.mapped:
                # Aged: a save followed by a pause. Open for writing: a large save in progress,
                # young at every look for as long as it is written, is not a status file (which
                # is open for a fraction of a millisecond per rewrite, and seldom seen open).
                self.churn.pop(path, None)
                continue
            run = self.churn.setdefault(path, {"since": now, "last": now, "looks": 0})
            run["looks"] += 1
            run["last"] = now

    def observe(self, tree):
        """Start watching the files of a scan (checkpoint_tree.scan_tree) younger than
        CHURN_AGE_SECONDS, so a status file the last sync took is known to churn by the next
        declaration (a file must be watched before a declaration to count as churning)."""
        now = self.clock()
        for entry in tree.files:
            if entry.path not in self.churn and now - entry.changed_ns / 1e9 < CHURN_AGE_SECONDS:
                self.churn[entry.path] = {"since": now, "last": now, "looks": 1}
            was = self.last_size.get(entry.path)
            if was is not None and entry.size < was:
                self.shortened[entry.path] = (entry.changed_ns, was)
            elif entry.path in self.shortened and entry.size >= self.shortened[entry.path][1]:
                del self.shortened[entry.path]  # written back to its length or longer
            self.last_size[entry.path] = entry.size

    def mapped_now(self):
        """{path: pid} of files the job's processes (at the last watch) map shared and writable;
        remembered in self.mapped."""
        now = mapped_for_writing(self.pids, self.root) if proc_available() else {}
        self.mapped |= set(now)
        return now

    def declared(self, at=None):
        """The job said its checkpoint is complete (line or marker): files changed before `at` need
        no quiescence."""
        previous = self.declared_at
        self.declared_at = self.clock() if at is None else at
        # A file the job held open for writing at every look since before the previous
        # declaration, and still holds: the job declared two saves complete while it stayed
        # open, so being open is not a save in progress (a sqlite database, an h5py file opened
        # "a", a model kept open "r+b" and rewritten before each declaration; break tests 20 F5,
        # 22 F5). It is read as it is, like a closed file: the copy-then-recheck refuses it if it
        # changes meanwhile, and a change after the declaration still takes the step away.
        self.held_open = set(path for path, since in self.open_since.items()
                             if previous is not None and since <= previous)
        # Which files were churning before this declaration; the next declaration needs fresh
        # evidence from the looks after this one (a job saving faster than the agent looks must
        # not have its model taken for a status file).
        self.churning = self.churning_now()
        now = self.clock()
        for run in self.churn.values():
            run.update(since=now, last=now, looks=0)
        # The job vouches for what it wrote: a save its handler finished in a child process that
        # then exited (after the signal) is complete.
        self.vanished_after_signal.clear()

    def cut(self, at=None, lookback=CUT_WINDOW_SECONDS):
        """The job died on its own (exit code not 0) at `at` (epoch seconds; now by default): files
        it changed in the `lookback` seconds before are not trusted unless a save was declared
        after their change (rule 3a), in every sync from now."""
        self.cut_at.append((self.clock() if at is None else at, lookback))

    def killing(self, sid):
        """The agent is about to kill the job's processes (session sid and its descendants): look at what they hold
        open for writing now, which is what the kill can cut short; anything changed from now on
        is not trusted either (a TERM handler writing on its way out). Rule 3a."""
        if sid is not None and proc_available():
            self.open_at_kill |= set(open_for_writing(self.processes.pids(sid), self.root))
        self.cut(lookback=0.0)

    def _shortened_at_stop(self, entry):
        """Rule 3b: a scan saw entry (FileEntry) get shorter around the first stop signal, kill or
        death, or after it; it is still shorter than before, and no save was declared since."""
        cut = self.shortened.get(entry.path)
        stops = [at for at, _ in self.cut_at] + ([self.signalled_at] if self.signalled_at is not None else [])
        if cut is None or not stops or entry.size >= cut[1] or self._declared_after(entry):
            return False
        changed_ns, was = cut
        return changed_ns / 1e9 >= min(stops) - CUT_WINDOW_SECONDS - was / float(TRUNCATE_BYTES_PER_SECOND)

    def _cut_short(self, entry):
        """Seconds before a kill or death that entry (FileEntry) last changed, when rule 3a leaves
        it out; else None."""
        if self._declared_after(entry):
            return None
        changed = entry.changed_ns / 1e9
        for at, lookback in self.cut_at:
            if changed >= at - lookback:
                return max(at - changed, 0.0)
        return None

    def _declared_after(self, entry):
        """True when the job declared a save after entry (FileEntry) last changed: the job says
        the file is complete as it is."""
        return self.declared_at is not None and entry.changed_ns / 1e9 <= self.declared_at

    def churning_now(self):
        """Paths found younger than CHURN_AGE_SECONDS at CHURN_LOOKS or more looks in a row over
        CHURN_SPAN_SECONDS or more since the newest declaration (the job's start before the first)."""
        return set(p for p, run in self.churn.items()
                   if run["looks"] >= CHURN_LOOKS and run["last"] - run["since"] >= CHURN_SPAN_SECONDS)

    def signalled(self, sid):
        """The stop signal is about to be sent to the job (session sid and its descendants): remember when, and what it
        was writing (read before the signal, so a declaration the signal prompts is never older).
        Called on the agent's main thread; reads /proc itself rather than this object's view."""
        self.signalled_at = self.clock()
        now = open_for_writing(self.processes.pids(sid), self.root) if (sid is not None and proc_available()) else {}
        self.open_at_signal = dict(self.writing, **now)

    def busy(self, path):
        """True when path is a busy file (see the module docstring), not a save in progress: seen
        open for appending; or never seen rewritten (open without O_APPEND) and only growing, its
        first and last bytes unchanged (_edges), over `busy_after` syncs that left it out (a log
        opened and closed for every line); or left
        out `busy_after` syncs in a row over BUSY_SECONDS."""
        if path in self.appended:
            return True
        if self._grows_like_a_log(path):
            return True
        prev = self.left_out.get(path)
        return prev is not None and prev["count"] >= self.busy_after and self.clock() - prev["since"] >= BUSY_SECONDS

    def outside_saves(self, path):
        """True when path is no part of any save, so a declared step holds whatever it contains:
        appended to or only growing (a log), or churning before the newest declaration (a status
        file). Files busy only by the BUSY_SECONDS rule are not: they may be a model rewritten
        more often than the quiet time."""
        return path in self.appended or path in self.churning or self._grows_like_a_log(path)

    def _grows_like_a_log(self, path):
        """Never seen opened for rewriting, and grown by appending over `busy_after` syncs that
        left it out (record, _edges): a log opened and closed for every line."""
        return path not in self.rewritten and self.growth.get(path, (0, 0, None))[1] >= self.busy_after

    def held_back(self, left, tree, job_ended=False, declared=False):
        """Why a save is in progress and this sync must publish nothing: (file reasons, entry
        reasons), lists of strings. File reasons: a file left out that is not busy (declared: not
        busy and not churning before the declaration; outside_saves). Entry reasons,
        only while the job runs and no declared save is waiting: a folder or link changed within
        the quiet time (an entry being created, removed or repointed, a save not yet whole). After
        a declaration only files count: a Trainer rotating its old checkpoint-<N>/ folders after
        the save changes folders, not the state it declared. Hugging Face folders waiting for
        their last file do not hold back: they are whole or absent."""
        files = []
        paths = set(e.path for e in tree.files)
        for item in left:
            if item.get("folder") or item.get("vanished") or self.busy(item["path"]) or (declared and item["path"] in self.churning):
                continue
            if next_save_folder(item["path"], paths):
                # The next save's checkpoint-<N>/ being written: left out whole, as if absent, so it
                # holds nothing back (a declared save just before it keeps its step).
                continue
            files.append(item["reason"])
        entries = []
        if not job_ended and not declared:
            now = self.clock()
            for rel, mtime in tree.entry_mtimes():
                if now - mtime < self.quiet and not (self.declared_at is not None and mtime <= self.declared_at):
                    entries.append("%s changed %.1fs ago (a save may be in progress)" % (rel, max(now - mtime, 0.0)))
        return files, entries

    def choose(self, tree, sid=None, job_ended=False, clean_exit=False):
        """Split tree.files (checkpoint_tree.FileEntry, from checkpoint_tree.scan_tree) into
        (candidates, left_out).

        sid: the job's session id while it runs (None once it ended); job_ended/clean_exit: the
        final sync after the job ended, and whether it exited 0. left_out: [{"path", "reason"}].
        """
        now = self.clock()
        self.observe(tree)
        open_now = self.watch(sid) if (sid is not None and not job_ended) else {}
        mapped_now = self.mapped_now() if (sid is not None and not job_ended) else {}
        candidates, left = [], []
        for entry in tree.files:
            reason = None
            cut_short = self._cut_short(entry)
            if entry.truncating:
                reason = "%s is being truncated (0 bytes with blocks still allocated: a save reopening it)" % entry.path
            elif entry.path in open_now and entry.path not in self.held_open:
                reason = "%s is open for writing by the job (pid %d)" % (entry.path, open_now[entry.path])
            elif entry.path in mapped_now:
                reason = "%s is mapped shared and writable by the job (pid %d)" % (entry.path, mapped_now[entry.path])
            elif entry.path in self.vanished_after_signal:
                reason = "%s was being written by pid %d, which ended after the stop signal before closing it (killed mid-save?)" % (
                    entry.path, self.suspect.get(entry.path, 0))
            elif job_ended and not clean_exit and entry.path in self.suspect:
                reason = "%s was being written by pid %d, which died before closing it (killed mid-save)" % (entry.path, self.suspect[entry.path])
            elif job_ended and not clean_exit and entry.path in self.writing:
                reason = "%s was still open for writing when the job ended (killed mid-save)" % entry.path
            elif entry.path in self.open_at_kill:
                reason = "%s was open for writing when the agent killed the job (a write the kill cut short)" % entry.path
            elif cut_short is not None:
                reason = ("%s changed %.2fs before the job was killed or died, and no save was declared after it "
                          "(a write it may have cut short)" % (entry.path, cut_short))
            elif entry.path in self.open_at_signal and not self._declared_since_signal():
                reason = ("%s was being written when the stop signal was sent, and the job declared no save after it "
                          "(a handler that exits at once leaves it half written)" % entry.path)
            elif self._shortened_at_stop(entry):
                reason = ("%s was cut short when the job was stopped (truncated, as open(..., \"wb\") does, as the "
                          "signal came), and no save was declared after it" % entry.path)
            elif not job_ended and entry.path != MARKER_FILE:
                # The change time, not the mtime alone: cp -p and rsync -a set an old mtime on a
                # file they have just written (checkpoint_tree.FileEntry).
                age = now - entry.changed_ns / 1e9
                if age < self.quiet and not self._declared_after(entry):
                    reason = "%s changed %.1fs ago (a file must be unchanged for %.1fs)" % (entry.path, max(age, 0.0), self.quiet)
            if reason:
                left.append({"path": entry.path, "reason": reason, "size": entry.size})
            else:
                candidates.append(entry)
        return self.whole_folders(candidates, left)

    def _declared_since_signal(self):
        return self.declared_at is not None and self.signalled_at is not None and self.declared_at >= self.signalled_at

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

    def _edges(self, path, sizes):
        """For each size in sizes, the first and the last EDGE_BYTES of path's first `size` bytes
        (one open for all), or None each when it cannot be read: a log grows by appending, so both
        stay as they were while it grows. A model that grows at every save (a replay buffer) is
        written anew, often to a temp name renamed into place, whose inode the kernel may hand out
        again (break test 16: taken for a log, its declared step stayed on the next save)."""
        try:
            with open(os.path.join(self.root, path), "rb") as f:
                out = []
                for size in sizes:
                    f.seek(0)
                    head = f.read(min(size, EDGE_BYTES))
                    f.seek(max(size - EDGE_BYTES, 0))
                    out.append((head, f.read(min(size, EDGE_BYTES))))
                return out
        except OSError:
            return [None] * len(sizes)

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
            if "size" in item:
                size, grew, edges = self.growth.get(item["path"], (None, 0, None))
                grown = size is not None and item["size"] > size
                now_edges = self._edges(item["path"], [item["size"], size] if grown else [item["size"]])
                longer = grown and now_edges[1] == edges
                self.growth[item["path"]] = (item["size"], grew + 1 if longer else 0, now_edges[0])
        for p in list(self.left_out):
            if p not in paths:
                del self.left_out[p]
                self.growth.pop(p, None)
        return [dict(path=p, **v) for p, v in sorted(self.left_out.items()) if self.busy(p)]
