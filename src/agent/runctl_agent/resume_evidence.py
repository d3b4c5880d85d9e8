"""Evidence against checkpoints (issue 9, "fall back after a failed resume").

An attempt that restored checkpoint C and then failed (the job exited non-zero, or vanished)
without publishing anything newer than C is evidence against C: restoring C again would most
likely fail the same way. The next attempt restores the newest checkpoint no such attempt
restored, and reports the ones it passed over (`restoredFrom.avoided`), which the controller shows
as a CheckpointFallback condition (reason ResumeFailed).

Why the agent reads this from storage rather than being told by the controller: the attempt
records (runs/<run>[/<uid>]/g<gen>/a<n>/status.json) are written by the agents that did the work, next
to the checkpoints they are about, in the same storage the restoring agent already reads; they
survive a controller that crashed or lost its state, a second controller (CI and a control host),
and a provider change. The controller only bounds the retries (recovery.maxRetriesOnError) and
fails the run when the agent reports that nothing is left (failureReason NoCheckpointLeft).

An interruption (spot notice, stop) is not evidence: the job did not fail. Neither is a failure
before the job started (bundle, secret, setup): the checkpoint was never loaded.
"""

import json

from .storage import StorageError

EVIDENCE_PHASES = ("failed", "lost")


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


def avoided_checkpoints(storage, prefix, generation, attempt):
    """{checkpoint id: {"id", "attempt", "reason"}} for every checkpoint of `generation` that an
    earlier attempt restored and then failed on before publishing a newer one."""
    out = {}
    for n, status in attempt_statuses(storage, prefix, generation, attempt):
        if status.get("phase") not in EVIDENCE_PHASES or not status.get("pid"):
            continue  # not a failure of the job itself
        restored = status.get("restoredFrom") or {}
        cid = restored.get("id")
        if not isinstance(cid, str) or restored.get("generation") not in (None, generation):
            continue
        published = (status.get("lastCheckpoint") or {}).get("id")
        if isinstance(published, str) and published > cid:
            continue  # it got further than what it restored: not evidence against cid
        out.setdefault(cid, {"id": cid, "attempt": n, "reason": how_it_ended(status)})
    return out
