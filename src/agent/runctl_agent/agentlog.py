"""The agent's own log, stateDir/agent.log: one timestamped, redacted line per action."""

import os
import threading

from .util import now_iso


class AgentLog:
    """Callable: log(message) appends `<ISO time> [<pid>] <message>`; write errors are ignored
    (the log must never be the reason an attempt fails). `redact(text) -> text` hides secrets."""

    def __init__(self, path, redact):
        self.path = path
        self.redact = redact
        self.lock = threading.Lock()

    def __call__(self, message):
        line = "%s [%d] %s\n" % (now_iso(), os.getpid(), self.redact(message))
        with self.lock:
            try:
                with open(self.path, "a") as f:
                    f.write(line)
            except OSError:
                pass
