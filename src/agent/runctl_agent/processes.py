"""Processes: the job wrapper, liveness by pid plus kernel start time, process groups, signals.

The job runs under WRAPPER_SCRIPT so its pid and exit code outlive the agent: the wrapper is the
process-group leader, records its own pid first (an agent killed right after starting it still
leaves a trace to adopt), traps (does not ignore, so children keep default dispositions) the stop
signals while the command runs, and writes the exit code with write-temp-then-rename.
$1 = command, $2 = exit-code file, $3 = pid file. Config values are arguments, never interpolated.
"""

import ctypes
import os
import subprocess
import threading

from .util import read_int

WRAPPER_SCRIPT = (
    'printf "%s\\n" "$$" > "$3.tmp" && mv -f "$3.tmp" "$3"; '
    'trap ":" HUP INT QUIT TERM USR1 USR2; '
    'bash -c "$1"; code=$?; '
    'printf "%s\\n" "$code" > "$2.tmp" && mv -f "$2.tmp" "$2"; '
    'exit "$code"'
)


def process_start_time(pid):
    """Kernel start time of pid (guards against pid reuse), or None where /proc is absent."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            stat = f.read().decode("ascii", "replace")
        return stat[stat.rindex(")") + 2:].split()[19]
    except (OSError, ValueError, IndexError):
        return None


def process_alive(pid, start_time=None):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            stat = f.read().decode("ascii", "replace")
        rest = stat[stat.rindex(")") + 2:].split()
        if rest[0] in ("Z", "X"):
            return False
        if start_time is not None and rest[19] != start_time:
            return False
        return True
    except FileNotFoundError:
        if os.path.isdir("/proc/self"):
            return False
    except (OSError, ValueError, IndexError):
        pass
    try:  # no /proc (macOS): a zombie still answers kill(0)
        out = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout
        state = out.decode("ascii", "replace").strip()
        return bool(state) and not state.startswith("Z")
    except OSError:
        return True


def group_alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def signal_group(pgid, sig):
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False


PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h
_spawned = set()  # pids of the wrappers spawn_wrapped started: their Popen reaps them, never we


def become_subreaper():
    """Make this process the child subreaper of its descendants (Linux prctl(2),
    PR_SET_CHILD_SUBREAPER): a process of the job that detaches (a double fork into a daemon,
    `setsid -f`) is then reparented to the agent instead of init, and stays the job's
    (JobProcesses; break test 21, F1). True when it took effect; False without Linux's prctl."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _proc_table():
    """{pid: (ppid, session id, kernel start time, state)} of every process, from one scan of
    /proc; {} without /proc."""
    table = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return table
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name, "rb") as f:
                stat = f.read().decode("ascii", "replace")
            fields = stat[stat.rindex(")") + 2:].split()
            table[int(name)] = (int(fields[1]), int(fields[3]), fields[19], fields[0])
        except (OSError, ValueError, IndexError):
            continue
    return table


class JobProcesses(object):
    """The job's processes: every process of its session, every process descended from one of
    them, every process once found so that still runs (the same pid and kernel start time), and
    every child of the agent in a session that is neither the agent's nor one it started
    (become_subreaper: a process that detached from the job, reparented to the agent).

    Why more than the session (break test 20, F1 and F2): torchrun starts each worker with
    start_new_session=True (torch.distributed.elastic's subprocess handler, `_popen`), so its
    workers are in neither the job's session nor its process group. Found as the launcher's
    descendants, they are watched for open checkpoint files like any process of the job, and
    killed with it. A worker whose launcher died is reparented to init, or to the agent when it is
    the subreaper; being remembered keeps it found either way. A process that leaves both the
    session and the tree between two looks (a double fork into a daemon, `setsid -f`: break test
    21, F1) is found only when the agent is the subreaper. Those adopted children are reaped here
    once they exit (nothing else waits for them). Looks come from several threads (the checkpoint
    loop, the stager, the main thread), hence the lock."""

    def __init__(self, environment=()):
        self.sid = None
        self.known = {}  # pid -> kernel start time, found at the last look
        self.lock = threading.Lock()
        # b"NAME=value" entries every process of the job has in its environment (the RUNCTL_*
        # variables of this attempt): a process that detached from the job before this agent
        # looked (an agent that restarted and adopted the job is nobody's subreaper; break test
        # 22) is still known by them. {pid: (start time, matched)}: each process is read once.
        self.environment = [e if isinstance(e, bytes) else e.encode("utf-8") for e in environment]
        self.by_environment = {}

    def pids(self, sid, live_only=False):
        """Sorted pids of the job whose session id is sid (the wrapper's pid); live_only leaves
        out zombies. [] without /proc."""
        table = _proc_table()
        with self.lock:
            if sid != self.sid:
                self.sid, self.known = sid, {}
            found = set(pid for pid, row in table.items() if row[1] == sid)
            found |= self._adopted(table)
            found |= self._by_environment(table, found)
            found |= set(pid for pid, start in self.known.items() if pid in table and table[pid][2] == start)
            children = {}
            for pid, row in table.items():
                children.setdefault(row[0], []).append(pid)
            todo = list(found)
            while todo:
                for child in children.get(todo.pop(), ()):
                    if child not in found:
                        found.add(child)
                        todo.append(child)
            self.known = dict((pid, table[pid][2]) for pid in found)
        return sorted(pid for pid in found if not (live_only and table[pid][3] in ("Z", "X")))

    def _by_environment(self, table, found):
        """Pids in table not in found whose environment holds every entry of self.environment
        (/proc/<pid>/environ, read once per process). A process that cleared its environment
        (env -i) is not known this way."""
        if not self.environment:
            return set()
        out = set()
        seen = {}
        never = (os.getpid(), os.getppid())  # the agent itself, and what started it
        for pid, row in table.items():
            if pid in never:
                continue
            cached = self.by_environment.get(pid)
            if cached is None or cached[0] != row[2]:
                matched = False
                if pid not in found and row[3] not in ("Z", "X"):
                    try:
                        with open("/proc/%d/environ" % pid, "rb") as f:
                            entries = set(f.read().split(b"\0"))
                        matched = all(e in entries for e in self.environment)
                    except OSError:
                        pass
                cached = (row[2], matched)
            seen[pid] = cached
            if cached[1] and pid not in found:
                out.add(pid)
        self.by_environment = seen
        return out

    @staticmethod
    def _adopted(table):
        """Live children of this process (the agent) in a session other than its own, which it did
        not start: processes of the job that detached and were reparented to it (AWS CLI
        processes the agent runs stay in its session). Those that exited are reaped."""
        me, mine = os.getpid(), os.getsid(0)
        out = set()
        for pid, row in table.items():
            if row[0] != me or row[1] == mine or pid in _spawned:
                continue
            if row[3] in ("Z", "X"):
                try:
                    os.waitpid(pid, os.WNOHANG)
                except OSError:
                    pass
            else:
                out.add(pid)
        return out

    def alive(self, pgid):
        """True while a process of the job (session pgid, as the wrapper leads both) runs; without
        /proc, while its process group does."""
        return bool(self.pids(pgid, live_only=True)) or group_alive(pgid)

    def signal(self, pgid, sig):
        """Send sig to the job's process group and to every other process of the job (workers in
        sessions of their own). Returns the pids outside the group that it reached."""
        others = [pid for pid in self.pids(pgid, live_only=True) if _pgid(pid) != pgid]
        signal_group(pgid, sig)
        return signal_each(others, sig)


def signal_each(pids, sig):
    """Send sig to each of pids; returns those it reached (the others had exited)."""
    reached = []
    for pid in pids:
        try:
            os.kill(pid, sig)
            reached.append(pid)
        except ProcessLookupError:
            pass
    return reached


def _pgid(pid):
    try:
        return os.getpgid(pid)
    except OSError:
        return None


class Child:
    """A wrapped child (setup or command) in its own session; ours (popen) or adopted (pid only)."""

    def __init__(self, name, pid, start_time, exit_path, popen=None):
        self.name = name
        self.pid = pid
        self.pgid = pid
        self.start_time = start_time
        self.exit_path = exit_path
        self.popen = popen

    def running(self):
        if self.popen is not None:
            return self.popen.poll() is None
        return process_alive(self.pid, self.start_time)

    def exit_code(self):
        return read_int(self.exit_path)


def spawn_wrapped(name, command, cwd, env, log_path, exit_path, pid_path):
    """Start `command` (bash -c) under the wrapper in a new session, stdout+stderr appended to
    log_path, stdin /dev/null. Returns the Popen; its pid is also the process group id."""
    log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        popen = subprocess.Popen(
            ["bash", "-c", WRAPPER_SCRIPT, "runctl-" + name, command, exit_path, pid_path],
            cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd,
            start_new_session=True, close_fds=True,
        )
        _spawned.add(popen.pid)
        return popen
    finally:
        os.close(log_fd)
