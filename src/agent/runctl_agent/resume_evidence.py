"""Evidence against checkpoints (issue 9, "fall back after a failed resume").

An attempt that restored checkpoint C and then failed (the job exited non-zero, or vanished)
without publishing newer training state than C is evidence against C, and against every
checkpoint that attempt published (they descend from C: C plus whatever the attempt wrote before
it died, typically a log line): restoring any of them would most likely fail the same way. The
next attempt restores the newest checkpoint no such evidence names, and reports the ones it passed
over (`restoredFrom.avoided`), which the controller shows as a CheckpointFallback condition
(reason ResumeFailed).

"Newer training state" (holds_newer_state, docs/checkpoints.md "Falling back after a failed
resume"), decided from the two manifests: when both record a step (declared by the job or read
from its layout), a higher step; otherwise a file that is new (and not empty) or rewritten, where
a file whose content is C's content with bytes appended (a log, a metrics file) is not rewritten.
Any byte that changed is not enough: a job that appends to a log beside its checkpoint and then
crashes loading it publishes "C plus a line" on every attempt (break9 finding
crash-after-restore-log-defeats-fallback), and that must not hide the evidence against C.

Why the agent reads this from storage rather than being told by the controller: the attempt
records (runs/<run>[/<uid>]/g<gen>/a<n>/status.json) are written by the agents that did the work, next
to the checkpoints they are about, in the same storage the restoring agent already reads; they
survive a controller that crashed or lost its state, a second controller (CI and a control host),
and a provider change. The controller only bounds the retries (recovery.maxRetriesOnError) and
fails the run when the agent reports that nothing is left (failureReason NoCheckpointLeft).

An interruption (spot notice, stop) is not evidence: the job did not fail. Neither is a failure
before the job started (bundle, secret, setup): the checkpoint was never loaded.
"""

import hashlib
import json

from .storage import StorageError

EVIDENCE_PHASES = ("failed", "lost")

# A grown file is read back (from storage) to tell an append from a rewrite only up to this size
# (bytes); a bigger one counts as rewritten, so a misjudgement keeps progress rather than throwing
# it away (logs beside a checkpoint are far smaller; a model file that grew is a rewrite).
APPEND_CHECK_MAX_BYTES = 16 * 1024 * 1024


def attempt_statuses(storage, prefix, generation, before_attempt):
    """[(attempt, status dict)] of this generation's earlier attempts that left a status object;
    prefix is the run's storage prefix (config.run_prefix: runs/<run>[/<uid>])."""
    out = []
    for attempt in range(1, before_attempt):
        try:
            raw = storage.get_bytes("%s/g%d/a%d/status.json" % (prefix, generation, attempt))
        except (StorageError, OSError):
            continue
        if not raw:
            continue
        try:
            doc = json.loads(raw.decode("utf-8"))
        except ValueError:
            continue
        if isinstance(doc, dict):
            out.append((attempt, doc))
    return out


def how_it_ended(status):
    if status.get("phase") == "lost":
        return "the job vanished without an exit code"
    if isinstance(status.get("exitCode"), int):
        return "the job exited with code %d" % status["exitCode"]
    return status.get("message") or "the attempt failed"


def _step(manifest):
    step = manifest.get("step")
    return step if isinstance(step, int) and not isinstance(step, bool) else None


def appended(old, new, prefix_sha256):
    """True when file entry `new` ({"path","size","sha256"}) is file entry `old` with bytes
    appended: longer, and its first old["size"] bytes hash to old["sha256"]. prefix_sha256(entry,
    n) gives the sha256 (hex) of the first n bytes of entry's stored content, or None when it
    cannot be read (then: not an append)."""
    if new["size"] <= old["size"]:
        return False
    if old["size"] == 0:
        return True
    if new["size"] > APPEND_CHECK_MAX_BYTES:
        return False
    return prefix_sha256(new, old["size"]) == old["sha256"]


def holds_newer_state(base, later, prefix_sha256):
    """True when checkpoint manifest `later` holds training state manifest `base` does not (the
    rule in the module docstring): a higher step when both record one; otherwise a non-empty file
    base lacks, or a file whose content differs from base's without being base's with bytes
    appended. Files removed, folders and links do not count. prefix_sha256: as for appended()."""
    base_step, later_step = _step(base), _step(later)
    if base_step is not None and later_step is not None:
        return later_step > base_step
    old_files = dict((f.get("path"), f) for f in base.get("files") or [] if isinstance(f, dict))
    for f in later.get("files") or []:
        if not isinstance(f, dict):
            continue
        old = old_files.get(f.get("path"))
        if old is None:
            if f.get("size"):
                return True
            continue
        if old.get("sha256") == f.get("sha256"):
            continue
        if not appended(old, f, prefix_sha256):
            return True
    return False


def published_by(manifest, published, attempt, after, upto=None):
    """The ids in `published` (ascending) newer than `after` (and not newer than `upto`, when
    given) whose manifest records `attempt`; manifest(cid) -> dict or None."""
    out = []
    for cid in published:
        if cid <= after or (upto is not None and cid > upto):
            continue
        m = manifest(cid)
        if isinstance(m, dict) and m.get("attempt") == attempt:
            out.append(cid)
    return out


def avoided_checkpoints(storage, prefix, generation, attempt, published, manifest, prefix_sha256):
    """{checkpoint id: {"id", "attempt", "reason"[, "descendsFrom"]}} for every published
    checkpoint of `generation` that evidence names: restored by an earlier attempt that then failed
    without publishing newer training state, or published by such an attempt (descendsFrom: the
    checkpoint it restored). published: this generation's published ids, ascending; manifest(cid)
    -> the manifest dict or None; prefix_sha256: as for appended().

    A failed attempt whose publications can no longer be judged (the restored checkpoint's
    manifest, or all of its own, retired) is not counted as evidence: without the manifests the
    rule cannot tell a log line from progress, and progress is never thrown away on a guess."""
    out = {}
    for n, status in attempt_statuses(storage, prefix, generation, attempt):
        if status.get("phase") not in EVIDENCE_PHASES or not status.get("pid"):
            continue  # not a failure of the job itself
        restored = status.get("restoredFrom") or {}
        cid = restored.get("id")
        if not isinstance(cid, str) or restored.get("generation") not in (None, generation):
            continue
        # What it published lies between what it restored and its last checkpoint (ids grow and
        # attempts follow one another): only those manifests are read (each is a storage GET,
        # about a second on S3 through the AWS CLI).
        last = (status.get("lastCheckpoint") or {}).get("id")
        if not isinstance(last, str) or last <= cid:
            own = []
        else:
            own = published_by(manifest, published, n, cid, upto=last)
            if not own:
                continue  # it published, but nothing of it is left to judge
        if own:
            base = manifest(cid)
            if not isinstance(base, dict) or any(holds_newer_state(base, manifest(p), prefix_sha256) for p in own):
                continue  # it got further than what it restored (or cannot be judged): not evidence
        how = how_it_ended(status)
        out.setdefault(cid, {"id": cid, "attempt": n, "reason": how})
        for p in own:
            out.setdefault(p, {"id": p, "attempt": n, "reason": how, "descendsFrom": cid})
    return out


def sha256_prefix(data, n):
    """sha256 hex of the first n bytes of data (bytes)."""
    return hashlib.sha256(data[:n]).hexdigest()
