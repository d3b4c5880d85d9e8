"""The agent's side of the fault channel (agreed across issues 9 and 10): faults present now,
published as `faults` in the status object; the controller turns each into a run condition of the
same type and an event, and sets the condition False once the entry is gone.

Each entry: {"reason": PascalCase, "message": what to do (secrets redacted by the status writer),
"since": ISO time first seen, "file"?: the file concerned}. Reasons this agent raises are listed
in docs/conditions.md.
"""

import threading

from .util import now_iso


class Faults(object):
    """Thread-safe set of current faults, keyed by reason."""

    def __init__(self):
        self.lock = threading.Lock()
        self.current = {}

    def raise_(self, reason, message, file=None):
        """Report (or update) a fault; `since` stays the time it was first seen. Returns True when new."""
        with self.lock:
            prev = self.current.get(reason)
            entry = {"reason": reason, "message": message, "since": prev["since"] if prev else now_iso()}
            if file:
                entry["file"] = file
            self.current[reason] = entry
            return prev is None

    def clear(self, reason):
        """The fault is gone; returns True when it was present."""
        with self.lock:
            return self.current.pop(reason, None) is not None

    def list(self):
        """The faults present now, sorted by reason (None when there are none, so the status omits it)."""
        with self.lock:
            return [dict(v) for _, v in sorted(self.current.items())] or None
