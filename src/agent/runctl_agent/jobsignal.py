"""Whom the notice signal goes to (issue 9, `checkpoints.signalScope`).

`main` (the default): the job's main process(es), not its workers. The job runs as
    wrapper (bash, group leader) -> bash -c "$run" -> ...
bash execs a single simple command, so for `run: python train.py` the main process is python.
For a multi-line script the shell stays and runs each command as a child: shells are looked
through (unless the script traps the signal: then it handles it and is the main process), and
the main processes are the top-most processes of the job that are not shells (the
command the script is running; `torchrun` for a torchrun launch, which forwards the signal to its
workers itself). Data-loader workers and other descendants of a main process keep running while
it saves, as under Kubernetes and the usual launchers, which signal only the container's or the
launcher's main process. In a pipeline (`python train.py 2>&1 | tee train.log`, `torchrun ... |
grep -v DEBUG | ts`) the stages downstream are output filters: a process whose stdin is a pipe a
sibling process of the job writes into (its fd 1 or 2 is that pipe) is not a main process, so
`tee` keeps copying the trainer's output while it saves, and only ends (EOF) after the trainer
exits; signalled with it, `tee` dies first and the trainer's next print dies of a broken pipe
(break9, pipeline-tee-signal-kills-save). So the first stage of a pipeline gets the signal. Where
/proc is missing, or no such process is found, the signal goes to the group.
`group`: every process of the job's process group at once (the behaviour before issue 9).
Either way the group gets SIGKILL when the grace period ends (the caller's job).
"""

import os
import signal

SHELLS = frozenset(("bash", "sh", "dash", "zsh", "ksh", "mksh", "busybox", "ash"))


def _stat(pid):
    """(comm, ppid, pgid) of pid from /proc, or None."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            stat = f.read().decode("utf-8", "replace")
        comm = stat[stat.index("(") + 1: stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] in ("Z", "X"):
            return None
        return comm, int(fields[1]), int(fields[2])
    except (OSError, ValueError, IndexError):
        return None


def group_tree(pgid):
    """{pid: (comm, ppid)} of the live processes of process group pgid; {} without /proc."""
    out = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return out
    for name in names:
        if name.isdigit():
            st = _stat(int(name))
            if st and st[2] == pgid:
                out[int(name)] = (st[0], st[1])
    return out


def handles(pid, sig):
    """True when pid catches or ignores sig (/proc/<pid>/status SigCgt/SigIgn): a shell script
    with `trap ... TERM` handles the notice itself, so it is the main process, not a wrapper."""
    bit = 1 << (sig - 1)
    try:
        with open("/proc/%d/status" % pid, "r") as f:
            for line in f:
                if line.startswith("SigCgt:") or line.startswith("SigIgn:"):
                    if int(line.split()[1], 16) & bit:
                        return True
    except (OSError, ValueError, IndexError):
        pass
    return False


def _pipe(pid, fd):
    """The `pipe:[inode]` that fd of pid is, or None (not a pipe, gone, or no /proc)."""
    try:
        link = os.readlink("/proc/%d/fd/%d" % (pid, fd))
    except OSError:
        return None
    return link if link.startswith("pipe:") else None


def pipeline_readers(pids, tree):
    """The pids of `pids` whose stdin (fd 0) is a pipe that another process of the job's group
    (tree: {pid: (comm, ppid)}) writes into through its stdout or stderr: the downstream stages of
    a pipeline (output filters such as tee, grep, sed, ts, logger)."""
    writers = {}
    for pid in tree:
        for fd in (1, 2):
            pipe = _pipe(pid, fd)
            if pipe is not None:
                writers.setdefault(pipe, set()).add(pid)
    readers = set()
    for pid in pids:
        pipe = _pipe(pid, 0)
        if pipe is not None and writers.get(pipe, set()) - set([pid]):
            readers.add(pid)
    return readers


def main_processes(leader, sig=signal.SIGTERM):
    """Pids of the job's main process(es) under the wrapper `leader` (see the module docstring);
    [] when none is found. A shell that traps `sig` is a main process (it handles the signal); a
    process reading a pipe that another process of the job writes is not (pipeline_readers)."""
    tree = group_tree(leader)
    if leader not in tree:
        return []
    children = {}
    for pid, (_comm, ppid) in tree.items():
        children.setdefault(ppid, []).append(pid)
    found = []
    todo = list(children.get(leader, []))  # the wrapper is ours: start below it
    while todo:
        pid = todo.pop(0)
        comm = tree[pid][0]
        if os.path.basename(comm) in SHELLS and not handles(pid, sig):
            todo.extend(sorted(children.get(pid, [])))
        else:
            found.append(pid)
    readers = pipeline_readers(found, tree)
    if readers and len(readers) < len(found):
        found = [pid for pid in found if pid not in readers]
    return sorted(found)


def send(leader, sig, scope, log):
    """Send sig as `scope` says ('main' or 'group'); returns a sentence saying to whom."""
    name = signal.Signals(sig).name
    if scope == "main":
        mains = main_processes(leader, sig)
        if mains:
            sent = []
            for pid in mains:
                try:
                    os.kill(pid, sig)
                    sent.append(pid)
                except ProcessLookupError:
                    pass
            if sent:
                return "sent %s to the job's main process%s %s" % (name, "es" if len(sent) > 1 else "", ", ".join(str(p) for p in sent))
        log("no main process found under the job's wrapper %d; sending %s to its process group" % (leader, name))
    try:
        os.killpg(leader, sig)
    except ProcessLookupError:
        return "the job's process group %d is gone" % leader
    return "sent %s to the job's process group %d" % (name, leader)
