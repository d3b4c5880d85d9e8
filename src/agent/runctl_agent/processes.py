"""Processes: the job wrapper, liveness by pid plus kernel start time, process groups, signals.

The job runs under WRAPPER_SCRIPT so its pid and exit code outlive the agent: the wrapper is the
process-group leader, records its own pid first (an agent killed right after starting it still
leaves a trace to adopt), traps (does not ignore, so children keep default dispositions) the stop
signals while the command runs, and writes the exit code with write-temp-then-rename.
$1 = command, $2 = exit-code file, $3 = pid file. Config values are arguments, never interpolated.
"""

import os
import subprocess

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
        return subprocess.Popen(
            ["bash", "-c", WRAPPER_SCRIPT, "runctl-" + name, command, exit_path, pid_path],
            cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd,
            start_new_session=True, close_fds=True,
        )
    finally:
        os.close(log_fd)
