#!/usr/bin/env python3
"""Restore of a checkpoint of many small files, timed (break9: many-small-files-slow-restore).
Not shipped; figures in docs/BENCHMARKS.md ("Restoring many small files").

    python3 src/agent/tests/restore_bench.py REPO N WORK [URL]

Publishes WORK/ckpt (N files small/00000.json..., ~10 bytes each, all distinct) with the agent
of REPO (its src/agent), then restores it with a fresh store and prints both times. URL is the
storage (default file://WORK/storage; s3://bucket/prefix with S3_ENDPOINT=http://127.0.0.1:port
for moto). REPO lets the same command time an older agent (a git worktree of an older commit)."""
import json
import os
import shutil
import sys
import time


def main(argv):
    repo, n, work = argv[0], int(argv[1]), os.path.abspath(argv[2])
    sys.path.insert(0, os.path.join(os.path.abspath(repo), "src", "agent"))
    from runctl_agent.checkpoint_restore import restore_checkpoint
    from runctl_agent.checkpoint_store import CheckpointStore
    from runctl_agent.checkpoints import Checkpoints
    from runctl_agent.storage import open_storage
    shutil.rmtree(work, ignore_errors=True)
    ckpt = os.path.join(work, "ckpt")
    os.makedirs(os.path.join(ckpt, "small"))
    for i in range(n):
        with open(os.path.join(ckpt, "small", "%05d.json" % i), "w") as f:
            f.write(json.dumps({"i": i}))
    url = argv[3] if len(argv) > 3 else "file://" + os.path.join(work, "storage")
    cfg = {"storage": url, "s3EndpointUrl": os.environ.get("S3_ENDPOINT"), "region": "us-east-1", "checkpointDir": ckpt,
           "syncIntervalSeconds": 1, "run": "bench", "generation": 1, "attempt": 1, "keep": 3, "resuming": False,
           "contentGraceSeconds": 0}
    logs = []
    storage = open_storage(cfg, logs.append)
    state = os.path.join(work, "state")
    os.makedirs(state)
    c = Checkpoints(cfg, storage, state, {}, logs.append, lambda text: None, lambda publish=False, **f: None,
                    lambda: False, lambda: None)
    started = time.time()
    ref = c.sync(final=True, clean_exit=True)
    synced = time.time() - started
    store = CheckpointStore(storage, "bench", 1, 2, state, logs.append, grace_seconds=0)
    started = time.time()
    manifest, reason = restore_checkpoint(store, 1, ref["id"], os.path.join(work, "out"), os.path.join(work, "scratch"))
    restored = time.time() - started
    print(json.dumps({"files": n, "syncSeconds": round(synced, 2), "restoreSeconds": round(restored, 2), "failure": reason,
                      "restoredFiles": len(os.listdir(os.path.join(work, "out", "small"))) if manifest else 0}))
    shutil.rmtree(work, ignore_errors=True)
    return 0 if manifest else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
