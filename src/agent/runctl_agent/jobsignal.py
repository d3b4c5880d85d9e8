"""Whom the notice signal goes to (issue 9, `checkpoints.signalScope`).

`main` (the default): the job's main process(es), not its workers. The job runs as
    wrapper (bash, group leader) -> bash -c "$run" -> ...
and its processes are its session and every descendant (processes.JobProcesses, job_tree), not
only its process group: `timeout 1h python train.py` moves timeout and the trainer into a group of
their own (break test 21). timeout itself is looked through (PASS_THROUGH, with time, flock, xargs
and script): signalled, it would pass the signal to its whole group, workers included, and the
others die of it without passing it on; the command such a launcher runs is the main process.
bash execs a single simple command, so for `run: python train.py` the main process is python.
For a multi-line script the shell stays and runs each command as a child: shells are looked
through, and the main processes are the top-most processes of the job that are not shells (the
command the script is running; `torchrun` for a torchrun launch, which forwards the signal to its
workers itself). The wrapper is ours: the walk starts below it, and it is never a main process.
A shell that traps the signal (`trap cleanup EXIT INT TERM`, or a script that forwards it) is a
main process too, so its trap runs; but bash runs a trap only once its FOREGROUND command exits,
so signalling the shell alone would leave a trainer running in the foreground unaware of the
notice until the grace period's SIGKILL (brk20 F3). So the walk also looks through a trapping shell
into its foreground commands (which are looked at by the same rules: a shell in them is looked
through, a trapping one is signalled and looked through). Its BACKGROUND commands (`cmd &`) are
left to its trap: `trap 'kill -TERM $pid' TERM; python train.py & pid=$!; wait $pid` forwards the
signal itself (`wait` is interrupted, the trap runs at once), and a second SIGTERM from us could
re-enter the trainer's handler mid-save. /proc tells them apart: POSIX XCU 2.11 "Signals and Error
Handling": "If job control is disabled ... when the shell executes an asynchronous list, the
commands in the list shall inherit from the shell a signal action of ignored (SIG_IGN) for the
SIGINT and SIGQUIT signals". A script has no job control, so a child of the shell whose SigIgn
(/proc/<pid>/status) has both SIGINT and SIGQUIT is a background command, any other child a
foreground one (bash does this; python keeps a SIGINT ignored at start ignored, so a backgrounded
trainer shows it; a foreground one catches SIGINT). The agent starts the job with default
dispositions (__main__.install_signal_handlers, the wrapper traps rather than ignores), but a
trapping shell that itself ignores both (a script started with `&` by another script) passes the
ignored action to every child, foreground or not: there the two cannot be told apart, and its
children are taken as foreground (signalled), since a trainer never told of the notice loses its
save for certain. In a pipeline (`python train.py 2>&1 | tee train.log`, `torchrun ... |
grep -v DEBUG | ts`) the stages downstream are output filters: a process whose stdin is a pipe a
sibling process of the job writes into (its fd 1 or 2 is that pipe) is not a main process, so
`tee` keeps copying the trainer's output while it saves, and only ends (EOF) after the trainer
exits; signalled with it, `tee` dies first and the trainer's next print dies of a broken pipe
(break9, pipeline-tee-signal-kills-save). So the first stage of a pipeline gets the signal.
Data-loader workers and other descendants of a main process that is not a shell keep running while
it saves, as under Kubernetes and the usual launchers, which signal only the container's or the
launcher's main process. Where /proc is missing, or no such process is found, the signal goes to
the group.
`group`: every process of the job's process group at once (the behaviour before issue 9).
Either way the group gets SIGKILL when the grace period ends (the caller's job).
"""

import os
import signal

from .processes import signal_each

SHELLS = frozenset(("bash", "sh", "dash", "zsh", "ksh", "mksh", "busybox", "ash"))
# Launchers that stay the command's parent, looked through like a shell that does not trap the
# signal, never signalled. GNU `timeout` (without --foreground) passes a signal to its command and
# then to its whole process group, data-loader workers included (coreutils timeout.c, cleanup:
# send_sig(0, sig)), the group-wide signal signalScope main exists to avoid (break test 21).
# `time`, `flock` and `xargs` die of it without passing it on, which orphans the trainer and
# reports the job as crashed on the notice; `script` closes the pseudo-terminal its command runs
# on, which hangs the command up in the middle of its save (break test 22, all in every run).
PASS_THROUGH = frozenset(("timeout", "time", "flock", "xargs", "script"))


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


def job_tree(leader, processes=None):
    """{pid: (comm, ppid)} of the job's live processes: with processes (processes.JobProcesses),
    its session and every descendant; without, its process group (group_tree). A launcher that
    moves itself into a process group of its own is still the job's: `timeout` does, unless given
    --foreground (break test 21: the notice then reached nobody, and the save was lost)."""
    if processes is None:
        return group_tree(leader)
    out = {}
    for pid in processes.pids(leader, live_only=True):
        st = _stat(pid)
        if st:
            out[pid] = (st[0], st[1])
    return out


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


def _sigmasks(pid):
    """(SigIgn, SigCgt) of pid as ints from /proc/<pid>/status, or None."""
    masks = {}
    try:
        with open("/proc/%d/status" % pid, "r") as f:
            for line in f:
                if line.startswith("SigCgt:") or line.startswith("SigIgn:"):
                    masks[line[:6]] = int(line.split()[1], 16)
    except (OSError, ValueError, IndexError):
        return None
    if len(masks) != 2:
        return None
    return masks["SigIgn"], masks["SigCgt"]


def handles(pid, sig):
    """True when pid catches or ignores sig (/proc/<pid>/status SigCgt/SigIgn): a shell script
    with `trap ... TERM` handles the notice itself, so it is a main process, not a wrapper."""
    masks = _sigmasks(pid)
    return masks is not None and bool((masks[0] | masks[1]) & (1 << (sig - 1)))


ASYNC_IGNORED = (1 << (signal.SIGINT - 1)) | (1 << (signal.SIGQUIT - 1))


def ignores_int_and_quit(pid):
    """True when pid ignores both SIGINT and SIGQUIT: the mark POSIX XCU 2.11 puts on the commands
    of an asynchronous list (`cmd &`) in a shell without job control (see the module docstring)."""
    masks = _sigmasks(pid)
    return masks is not None and masks[0] & ASYNC_IGNORED == ASYNC_IGNORED


def foreground_children(shell, kids):
    """The pids of kids (children of `shell`) that are its foreground commands, not its background
    ones (`cmd &`, which ignore SIGINT and SIGQUIT, XCU 2.11). When the shell itself ignores both,
    every child inherits that and the two cannot be told apart: all are taken as foreground (brk20
    F3: a trainer never signalled loses its save)."""
    if ignores_int_and_quit(shell):
        return list(kids)
    return [pid for pid in kids if not ignores_int_and_quit(pid)]


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


def main_processes(leader, sig=signal.SIGTERM, processes=None):
    """Pids of the job's main process(es) under the wrapper `leader` (see the module docstring);
    [] when none is found. A shell that traps `sig` is a main process (its trap runs) and is looked
    through into its foreground commands, not its background ones (foreground_children; brk20 F3);
    a shell that does not is only looked through; a process reading a pipe that another process of
    the job writes is not a main process (pipeline_readers). The job's processes are job_tree's."""
    tree = job_tree(leader, processes)
    if leader not in tree:
        return []
    children = {}
    for pid, (_comm, ppid) in tree.items():
        children.setdefault(ppid, []).append(pid)
    found = []
    todo = list(children.get(leader, []))  # the wrapper is ours: start below it
    while todo:
        pid = todo.pop(0)
        comm = os.path.basename(tree[pid][0])
        if comm in PASS_THROUGH:
            todo.extend(sorted(children.get(pid, [])))
        elif comm not in SHELLS:
            found.append(pid)
        elif not handles(pid, sig):
            todo.extend(sorted(children.get(pid, [])))
        else:
            found.append(pid)
            todo.extend(sorted(foreground_children(pid, children.get(pid, []))))
    readers = pipeline_readers(found, tree)
    if readers and len(readers) < len(found):
        found = [pid for pid in found if pid not in readers]
    return sorted(found)


def send(leader, sig, scope, log, processes=None):
    """Send sig as `scope` says ('main' or 'group'); returns a sentence saying to whom.
    processes: the job's processes (processes.JobProcesses), where main processes are looked for."""
    name = signal.Signals(sig).name
    if scope == "main":
        mains = main_processes(leader, sig, processes)
        if mains:
            sent = signal_each(mains, sig)
            if sent:
                return "sent %s to the job's main process%s %s" % (name, "es" if len(sent) > 1 else "", ", ".join(str(p) for p in sent))
        log("no main process found under the job's wrapper %d; sending %s to its process group" % (leader, name))
    try:
        os.killpg(leader, sig)
    except ProcessLookupError:
        return "the job's process group %d is gone" % leader
    return "sent %s to the job's process group %d" % (name, leader)
