"""The attempt's progress: the job's output followed from its start offset in job.log, the
status's progress, and a bounded history of (time, step, metrics) kept in storage as
`<attempt prefix>progress.json` (src/agent/progress-document.ts reads it) so a run's curve
survives the replacement of its instance.

Bounds (docs/progress.md): at most MAX_POINTS points and MAX_BYTES of JSON (when over, every
other point of each pair is dropped, keeping the one that carries more metrics, so sparse ones
such as a validation loss survive); at most progress.MAX_METRICS names. The object is rewritten
whole at most every PUBLISH_SECONDS while it changes, and at the attempt's end. A copy with the
read offset in stateDir/progress.json lets a restarted agent continue the same history.
"""

import json
import os
import re
import threading
import time

from .progress import Tracker
from .storage import StorageError
from .util import atomic_write, json_bytes, now_iso, read_json

MAX_POINTS = 2000
MAX_BYTES = 512 * 1024
PUBLISH_SECONDS = 15.0
# Most bytes of job output read per refresh, and most seconds spent parsing them: a refresh runs
# on the heartbeat thread, which must keep publishing the status (the rest waits for the next
# refresh). A backlog larger than SKIP_BACKLOG_BYTES (a job printing faster than it can be read,
# an agent restarted after a long gap) is skipped to its last KEEP_BACKLOG_BYTES.
READ_BYTES = 4 * 1024 * 1024
PARSE_SECONDS = 0.5
SKIP_BACKLOG_BYTES = 64 * 1024 * 1024
KEEP_BACKLOG_BYTES = 1024 * 1024
NOTE_PREFIX = b"[runctl-agent]"
LINE_RE = re.compile(rb"([^\r\n]*)(?:\r\n|\r|\n)")


def downsample(points):
    """Half the points: of each pair the one with more metrics (the later on a tie); the last
    point always stays, so the curve ends where the job is."""
    if len(points) < 3:
        return list(points)
    body, last = points[:-1], points[-1]
    kept = []
    for i in range(0, len(body), 2):
        pair = body[i:i + 2]
        kept.append(max(reversed(pair), key=lambda p: len(p["metrics"])))
    if kept and kept[-1] is last:
        return kept
    return kept + [last]


class History:
    """Points of one attempt, oldest first; record() merges what is printed at the same step."""

    def __init__(self, points=None):
        self.points = list(points or [])

    def record(self, step, total, metrics, at=None):
        at = at or now_iso()
        last = self.points[-1] if self.points else None
        if last is not None and last["step"] == step:
            last["metrics"].update(metrics)
            last["time"] = at
            if total is not None:
                last["total"] = total
            return
        point = {"time": at, "step": step, "metrics": dict(metrics)}
        if total is not None:
            point["total"] = total
        self.points.append(point)
        if len(self.points) > MAX_POINTS:
            self.points = downsample(self.points)

    def document(self, key):
        """The stored document (ProgressHistoryDocument), within MAX_BYTES."""
        while True:
            doc = dict(key, version=1, points=self.points)
            data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")
            if len(data) <= MAX_BYTES or len(self.points) < 3:
                return data
            self.points = downsample(self.points)


class ProgressFollower:
    """Follows job.log from the training job's start offset (the job's output only: the agent's
    own notes are skipped) and keeps the tracker and the history of one attempt.

    key: {"run", "generation", "attempt"}; storage: the agent's storage; attempt_prefix: the key
    prefix of the attempt; state_dir: where the local copy lives; pattern: the translated
    spec.progress.pattern or None; redact_bytes(bytes) -> bytes; log(message)."""

    def __init__(self, key, storage, attempt_prefix, state_dir, pattern, redact_bytes, log):
        self.key = key
        self.storage = storage
        self.object_key = attempt_prefix + "progress.json"
        self.local_path = os.path.join(state_dir, "progress.json")
        self.log_path = os.path.join(state_dir, "job.log")
        self.pattern = pattern
        self.redact_bytes = redact_bytes
        self.log = log
        self.lock = threading.Lock()
        self.tracker = Tracker(pattern)
        self.history = History()
        self.offset = None
        self.start = None
        self.dirty = False
        self.published_at = None

    def begin(self, start_offset):
        """Follow the job whose output starts at start_offset in job.log. A copy left by an agent
        that followed the same job is continued (its points and offset), not started over."""
        with self.lock:
            saved = read_json(self.local_path)
            if isinstance(saved, dict) and saved.get("start") == start_offset and isinstance(saved.get("points"), list):
                self.history = History(saved["points"])
                self.offset = int(saved.get("offset", start_offset))
                self.tracker.restore(saved.get("tracker"))
            else:
                self.offset = start_offset
            self.start = start_offset

    def progress(self):
        return self.tracker.progress()

    def refresh(self):
        """Read the job's new output; returns the status's progress (or None)."""
        with self.lock:
            if self.offset is None:
                return None
            try:
                with open(self.log_path, "rb") as f:
                    f.seek(0, os.SEEK_END)
                    size = f.tell()
                    if size - self.offset > SKIP_BACKLOG_BYTES:
                        self.log("progress: skipping %d bytes of job output read by nobody" % (size - KEEP_BACKLOG_BYTES - self.offset))
                        self.offset = size - KEEP_BACKLOG_BYTES
                    f.seek(self.offset)
                    data = f.read(min(READ_BYTES, max(0, size - self.offset)))
            except OSError:
                return self.tracker.progress()
            # Whole line states only (each ends with a newline or a carriage return).
            deadline = time.monotonic() + PARSE_SECONDS
            read_at = now_iso()  # a point's time is when the agent read it
            used = 0
            for m in LINE_RE.finditer(data):
                used = m.end()
                raw = m.group(1)
                if raw and not raw.startswith(NOTE_PREFIX):
                    point = self.tracker.feed(self.redact_bytes(raw).decode("utf-8", "replace"))
                    if point is not None:
                        step, total, metrics = point
                        self.history.record(step, total, metrics, at=read_at)
                        self.dirty = True
                if time.monotonic() > deadline:
                    break
            self.offset += used
            return self.tracker.progress()

    def publish(self, force=False):
        """Write the history to storage when it changed, at most every PUBLISH_SECONDS unless
        force (the attempt's end). Storage errors are logged; the next call tries again."""
        with self.lock:
            if not self.dirty or self.offset is None:
                return
            if not force and self.published_at is not None and time.monotonic() - self.published_at < PUBLISH_SECONDS:
                return
            data = self.history.document(self.key)
            local = {"start": self.start, "offset": self.offset, "points": self.history.points, "tracker": self.tracker.snapshot()}
            self.dirty = False
            self.published_at = time.monotonic()
        try:
            atomic_write(self.local_path, json_bytes(local))
        except OSError as e:
            self.log("progress copy write failed: %s" % e)
        try:
            self.storage.put_bytes(self.object_key, data)
        except (StorageError, OSError) as e:
            self.log("progress history upload failed: %s" % e)
            with self.lock:
                self.dirty = True
