"""The job's log (stateDir/job.log): its view in the status (logTail, progress) and its shipping
to storage as append-only segments `<attempt>/logs/<8-digit seq>.log` of whole lines, redacted.

Lines the agent itself adds to job.log start with `[runctl-agent] ` and are left out of logTail.
"""

import os
import re

from .storage import StorageError
from .util import atomic_write, json_bytes, now_iso, pad_seq, read_json

LOG_TAIL_LINES = 20
TAIL_WINDOW_BYTES = 64 * 1024
SEGMENT_MAX_BYTES = 4 * 1024 * 1024
NOTE_PREFIX = "[runctl-agent]"

PROGRESS_RE = re.compile(r"\bstep\s*[=:]\s*(\d+)(?:\s*/\s*(\d+))?")
LOSS_RE = re.compile(r"\bloss\s*[=:]\s*([-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|nan|inf))", re.I)


def parse_progress(line):
    """{"step": N, "total"?: T, "loss"?: X} from a `step=N[/T] ... loss=X` line, or None.
    A non-finite loss is left out."""
    if line.lstrip().startswith("RUNCTL_CHECKPOINT_SAVED"):
        return None  # a declared save (steps.py), not progress
    m = PROGRESS_RE.search(line)
    if not m:
        return None
    progress = {"step": int(m.group(1))}
    if m.group(2):
        progress["total"] = int(m.group(2))
    lm = LOSS_RE.search(line)
    if lm:
        try:
            loss = float(lm.group(1))
            if loss == loss and loss not in (float("inf"), float("-inf")):
                progress["loss"] = loss
        except ValueError:
            pass
    return progress


class JobLog:
    """job.log in state_dir, its segments under `attempt_prefix + "logs/"` in storage.
    redact_bytes(bytes) -> bytes hides secrets; log(message) is the agent's log."""

    def __init__(self, state_dir, storage, attempt_prefix, redact_bytes, log):
        self.path = os.path.join(state_dir, "job.log")
        self.cursor_path = os.path.join(state_dir, "logs.cursor")
        self.storage = storage
        self.attempt_prefix = attempt_prefix
        self.redact_bytes = redact_bytes
        self.log = log

    def note(self, text):
        """Append an agent line to job.log (so the shipped log tells the attempt's story)."""
        try:
            with open(self.path, "a") as f:
                f.write("%s %s %s\n" % (NOTE_PREFIX, now_iso(), text))
        except OSError:
            pass

    def size(self):
        return os.path.getsize(self.path) if os.path.exists(self.path) else 0

    def tail_lines(self, start):
        """The job's (redacted) lines from byte offset `start`, at most the last 64 KiB of them."""
        try:
            with open(self.path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                begin = max(start, size - TAIL_WINDOW_BYTES)
                if begin >= size:
                    return []
                f.seek(begin)
                data = f.read(size - begin)
        except OSError:
            return []
        text = self.redact_bytes(data).decode("utf-8", "replace")
        lines = text.splitlines()
        if begin > start and lines:
            lines = lines[1:]  # first line is probably cut
        return [ln for ln in lines if not ln.startswith(NOTE_PREFIX)]

    def view(self, tail_from, progress_from):
        """Status fields: logTail (last 20 lines from tail_from, None when empty) and, when
        progress_from is set and a progress line exists after it, progress."""
        lines = self.tail_lines(tail_from)
        fields = {"logTail": lines[-LOG_TAIL_LINES:] if lines else None}
        if progress_from is not None:
            for line in reversed(self.tail_lines(progress_from)):
                progress = parse_progress(line)
                if progress:
                    fields["progress"] = progress
                    break
        return fields

    def ship(self, final=False):
        """Upload what job.log holds beyond the cursor as segments of at most 4 MiB; whole lines
        only unless final. The cursor (offset, seq) is saved after each segment, so a restarted
        agent continues the sequence. Storage errors are logged, not raised."""
        cursor = read_json(self.cursor_path) or {"offset": 0, "seq": 0}
        try:
            with open(self.path, "rb") as f:
                # Ship only what was there on entry: a job printing faster than one upload takes
                # would otherwise keep this loop (and the status heartbeat behind it) busy forever.
                f.seek(0, os.SEEK_END)
                end = f.tell()
                f.seek(cursor["offset"])
                data = f.read(min(SEGMENT_MAX_BYTES, max(0, end - cursor["offset"])))
                while data:
                    chunk = data
                    if not final and len(data) < SEGMENT_MAX_BYTES:
                        cut = data.rfind(b"\n")
                        if cut < 0:
                            return
                        chunk = data[: cut + 1]
                    seq = cursor["seq"] + 1
                    self.storage.put_bytes(self.attempt_prefix + "logs/%s.log" % pad_seq(seq), self.redact_bytes(chunk))
                    cursor = {"offset": cursor["offset"] + len(chunk), "seq": seq}
                    atomic_write(self.cursor_path, json_bytes(cursor))
                    f.seek(cursor["offset"])
                    data = f.read(min(SEGMENT_MAX_BYTES, max(0, end - cursor["offset"])))
        except FileNotFoundError:
            return
        except (StorageError, OSError) as e:
            self.log("log segment upload failed: %s" % e)
