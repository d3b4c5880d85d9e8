"""The fault channel, agent side: faults the agent sees on the instance, listed in the status
object as `faults` while they last (issues 9 and 10). Each is {reason, message, since, file?}:
reason is PascalCase (the controller makes it a run condition of that type), message says what
to do, since is when it was first seen. docs/conditions.md lists every reason."""

import threading

from .util import now_iso


class Faults:
    """Thread-safe set of current faults, one per reason. on_change(list) is called after every
    change with the new list (the agent puts it in its status)."""

    def __init__(self, on_change, log):
        self._items = {}
        self._lock = threading.Lock()
        self._on_change = on_change
        self._log = log

    def report(self, reason, message, file=None):
        """Report (or refresh the message of) a fault; `since` stays the first time it was seen."""
        with self._lock:
            old = self._items.get(reason)
            entry = {"reason": reason, "message": message, "since": old["since"] if old else now_iso()}
            if file:
                entry["file"] = file
            if old == entry:
                return
            self._items[reason] = entry
            items = self._list()
        if not old:
            self._log("fault %s: %s" % (reason, message))
        self._on_change(items)

    def clear(self, reason):
        with self._lock:
            if reason not in self._items:
                return
            del self._items[reason]
            items = self._list()
        self._log("fault %s cleared" % reason)
        self._on_change(items)

    def active(self, reason):
        with self._lock:
            return reason in self._items

    def _list(self):
        return [dict(v) for v in sorted(self._items.values(), key=lambda f: f["since"])]
