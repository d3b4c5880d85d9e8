"""The job's log (stateDir/job.log): its view in the status (logTail) and its shipping
to storage as append-only segments `<attempt>/logs/<8-digit seq>.log` of whole lines, redacted.

Lines the agent itself adds to job.log start with `[runctl-agent] ` and are left out of logTail.
"""

import os
import threading

from .storage import StorageError
from .util import atomic_write, json_bytes, now_iso, pad_seq, read_json

LOG_TAIL_LINES = 20
TAIL_WINDOW_BYTES = 64 * 1024
SEGMENT_MAX_BYTES = 4 * 1024 * 1024
NOTE_PREFIX = "[runctl-agent]"



def last_state(line):
    """What a line drawn with carriage returns shows: its last non-empty `\\r` segment (bytes)."""
    for part in reversed(line.split(b"\r")):
        if part:
            return part
    return b""


def compact(data, final, full):
    """(bytes to ship, bytes of `data` consumed) for one log segment.

    Progress redrawn with carriage returns (tqdm) is stored as what a terminal shows: each whole
    line keeps only its last state, and an unfinished line that holds `\\r` is shipped now as its
    latest state followed by `\\r` (so readers see the bar while the job runs, and the next state
    overwrites it). Other unfinished lines wait for their newline, unless `final` (the attempt
    ended) or `full` (a 4 MiB segment is cut mid-line)."""
    cut = data.rfind(b"\n")
    whole, rest = data[: cut + 1], data[cut + 1:]
    lines = whole.split(b"\n")[:-1]
    out = b"".join((last_state(ln) if b"\r" in ln else ln) + b"\n" for ln in lines)
    if rest:
        if b"\r" in rest:
            state = last_state(rest)
            out += state + (b"" if final or not state else b"\r")
        elif final or full:
            out += rest
        else:
            return out, len(whole)
    return out, len(data)


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
        self.noted_bytes = 0
        self.noted_until = None  # byte offset just after the agent's last note: a line before it may not be timed by the log's change time
        # Notes come from several threads (the checkpoint restore runs beside setup).
        self.note_lock = threading.Lock()

    def output_size(self):
        """Bytes the job (setup, command) wrote to job.log, the agent's own notes left out."""
        return self.size() - self.noted_bytes

    def note(self, text):
        """Append an agent line to job.log (so the shipped log tells the attempt's story), on a
        line of its own: after a job's last line without a newline, a newline comes first."""
        with self.note_lock:
            self._note(text)

    def _note(self, text):
        try:
            with open(self.path, "ab+") as f:
                f.seek(0, os.SEEK_END)
                glued = False
                if f.tell() > 0:
                    f.seek(-1, os.SEEK_END)
                    glued = f.read(1) not in (b"\n", b"")
                line = ("%s%s %s %s\n" % ("\n" if glued else "", NOTE_PREFIX, now_iso(), text)).encode("utf-8")
                f.write(line)
                self.noted_bytes += len(line)
                self.noted_until = f.tell()
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
        # A progress bar redrawn with \r is one line showing its latest state, not one per redraw.
        lines = [last_state(ln.encode("utf-8")).decode("utf-8") if "\r" in ln else ln for ln in text.split("\n")]
        if lines and lines[-1] == "":
            lines.pop()
        if begin > start and lines:
            lines = lines[1:]  # first line is probably cut
        return [ln for ln in lines if not ln.startswith(NOTE_PREFIX)]

    def view(self, tail_from):
        """Status fields: logTail (last 20 lines from tail_from, None when empty). The job's
        progress is read by progress_history.ProgressFollower."""
        lines = self.tail_lines(tail_from)
        return {"logTail": lines[-LOG_TAIL_LINES:] if lines else None}

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
                    out, used = compact(data, final, len(data) >= SEGMENT_MAX_BYTES)
                    if used == 0:
                        return
                    seq = cursor["seq"]
                    if out:
                        seq += 1
                        self.storage.put_bytes(self.attempt_prefix + "logs/%s.log" % pad_seq(seq), self.redact_bytes(out))
                    cursor = {"offset": cursor["offset"] + used, "seq": seq}
                    atomic_write(self.cursor_path, json_bytes(cursor))
                    f.seek(cursor["offset"])
                    data = f.read(min(SEGMENT_MAX_BYTES, max(0, end - cursor["offset"])))
        except FileNotFoundError:
            return
        except (StorageError, OSError) as e:
            self.log("log segment upload failed: %s" % e)
