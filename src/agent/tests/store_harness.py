#!/usr/bin/env python3
"""A small CLI over the real checkpoint store modules, for the kill matrix and the property test
(test/agent/checkpoint-kill.test.ts, test/agent/checkpoint-property.test.ts). Not shipped.

    python3 store_harness.py WORK save JSON      change the job's folder WORK/ckpt (see save())
    python3 store_harness.py WORK sync [STEP]    one sync of WORK/ckpt through the agent's own path
                                                 (checkpoints.Checkpoints.sync: capture, store,
                                                 local state), as the final sync after a clean exit
    python3 store_harness.py WORK stage          store the folder's finished files ahead of a declared
                                                 save (checkpoints.Checkpoints.stage, for a job that
                                                 declares its saves; any size: the harness's files
                                                 are small), publishing nothing
    python3 store_harness.py WORK retain KEEP    retention (store.retain)
    python3 store_harness.py WORK verify         every published manifest restores and verifies,
                                                 and restores to a folder state that was saved
    python3 store_harness.py WORK stats          stored contents, manifests, bytes
    python3 store_harness.py WORK run JSON       the commands in JSON ([[command, args...], ...]) one
                                                 after the other in this one process, sharing one
                                                 store (as one agent does: its view of storage is
                                                 listed once and kept up to date); ["restart"]
                                                 starts a fresh store (a restarted agent). The
                                                 index of the one running is kept in WORK/progress,
                                                 so a test that kills the process knows where it was

Storage is WORK/storage (file://) unless HARNESS_STORAGE_URL names another (s3://...; then
HARNESS_S3_ENDPOINT is its endpoint). RUNCTL_AGENT_KILL_AFTER_OPS=N kills the process before its
(N+1)-th storage mutation (checkpoint_store.KillSwitch). Prints one JSON document.
"""

import hashlib
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from runctl_agent.checkpoint_restore import restore_checkpoint  # noqa: E402
from runctl_agent.checkpoint_store import CheckpointStore, contents_prefix, manifest_shas  # noqa: E402
from runctl_agent.checkpoint_tree import scan_tree  # noqa: E402
from runctl_agent import checkpoints as checkpoints_module  # noqa: E402
from runctl_agent.checkpoints import Checkpoints  # noqa: E402
from runctl_agent.storage import open_storage  # noqa: E402
from runctl_agent.util import remove_quietly  # noqa: E402

RUN = "prop"
GEN = 1


def open_store(work):
    url = os.environ.get("HARNESS_STORAGE_URL") or "file://" + os.path.join(work, "storage")
    cfg = {"storage": url, "s3EndpointUrl": os.environ.get("HARNESS_S3_ENDPOINT"), "region": "us-east-1"}
    state = os.path.join(work, "state")
    os.makedirs(state, exist_ok=True)
    logs = []
    storage = open_storage(cfg, logs.append)
    grace = float(os.environ.get("HARNESS_GRACE_SECONDS", "0"))
    return CheckpointStore(storage, RUN, GEN, 1, state, logs.append, grace_seconds=grace), logs


def open_checkpoints(work, store, logs):
    """The agent's Checkpoints over this store (retention is the separate `retain` command here,
    so its own keep is never reached)."""
    cfg = {"checkpointDir": os.path.join(work, "ckpt"), "syncIntervalSeconds": 1, "storage": "file://" + os.path.join(work, "storage"),
           "run": RUN, "generation": GEN, "attempt": 1, "keep": 1000000, "resuming": False,
           "contentGraceSeconds": store.grace}
    ckpts = Checkpoints(cfg, store.storage, store.state_dir, {"run": RUN, "generation": GEN, "attempt": 1}, logs.append,
                        lambda text: None, lambda publish=False, **fields: None, lambda: False, lambda: None)
    ckpts.store = store
    return ckpts


def folder_digest(root):
    """A digest of what a restore must reproduce: files (content, mode), folders (mode), links."""
    tree = scan_tree(root)
    doc = {"files": [], "dirs": [[d["path"], d["mode"]] for d in tree.dirs], "links": [[s["path"], s["target"]] for s in tree.symlinks]}
    for f in tree.files:
        with open(os.path.join(root, *f.path.split("/")), "rb") as fh:
            doc["files"].append([f.path, hashlib.sha256(fh.read()).hexdigest(), f.mode])
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def save(work, spec):
    """spec: {"write": {path: text}, "mode": {path: int}, "delete": [path], "dirs": [path],
    "links": {path: target}}; applied to WORK/ckpt in that order."""
    root = os.path.join(work, "ckpt")
    os.makedirs(root, exist_ok=True)
    for rel, text in sorted((spec.get("write") or {}).items()):
        path = os.path.join(root, *rel.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    for rel, mode in sorted((spec.get("mode") or {}).items()):
        os.chmod(os.path.join(root, *rel.split("/")), mode)
    for rel in spec.get("delete") or []:
        remove_quietly(os.path.join(root, *rel.split("/")))
    for rel in spec.get("dirs") or []:
        os.makedirs(os.path.join(root, *rel.split("/")), exist_ok=True)
    for rel, target in sorted((spec.get("links") or {}).items()):
        path = os.path.join(root, *rel.split("/"))
        remove_quietly(path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.symlink(target, path)
    return {"digest": folder_digest(root)}


def record_expected(work):
    root = os.path.join(work, "ckpt")
    path = os.path.join(work, "expected.json")
    try:
        with open(path) as f:
            known = json.load(f)
    except (OSError, ValueError):
        known = []
    digest = folder_digest(root)
    if digest not in known:
        known.append(digest)
        with open(path + ".tmp", "w") as f:
            json.dump(known, f)
        os.replace(path + ".tmp", path)


def main(argv):
    work, command = os.path.abspath(argv[0]), argv[1]
    if command == "run":
        results = []
        shared = {}
        for i, args in enumerate(json.loads(argv[2])):
            with open(os.path.join(work, "progress.tmp"), "w") as f:
                f.write("%d\n" % i)
            os.replace(os.path.join(work, "progress.tmp"), os.path.join(work, "progress"))
            if args[0] == "restart":
                shared.clear()
                results.append({})
                continue
            results.append(one(work, args[0], args[1:], shared))
        print(json.dumps({"results": results}))
        return 0
    out = one(work, command, argv[2:])
    if out is None:
        sys.stderr.write("unknown command %s\n" % command)
        return 2
    print(json.dumps(out))
    return 0


def one(work, command, args, shared=None):
    """One harness command; its JSON result, or None for an unknown command. shared: a dict that
    keeps the store between commands of one `run` (None: a fresh store)."""
    argv = [work, command] + list(args)
    os.makedirs(work, exist_ok=True)
    if command == "save":
        return save(work, json.loads(argv[2]))
    if command == "verify":
        store, logs = open_store(work)  # what a new agent would find, never this one's view
    elif shared is not None and "store" in shared:
        store, logs = shared["store"], shared["logs"]
        del logs[:]
    else:
        store, logs = open_store(work)
        if shared is not None:
            shared.update(store=store, logs=logs)
    if command == "sync":
        root = os.path.join(work, "ckpt")
        record_expected(work)  # before the sync: a sync killed after its manifest still matches
        step = int(argv[2]) if len(argv) > 2 else None
        ckpts = open_checkpoints(work, store, logs)
        if step is not None:
            ckpts.declared = (step, "line")
        ref = ckpts.sync(final=True, clean_exit=True)
        return {"id": ref and ref["id"], "ref": ref, "leftOut": ckpts.last_left_out, "logs": logs}
    if command == "stage":
        ckpts = open_checkpoints(work, store, logs)
        ckpts.declares_saves = True
        checkpoints_module.STAGE_FROM_BYTES = 1
        # This process as the job's session: alive, and holding none of the files open.
        return {"stored": ckpts.stage(os.getpid()), "logs": logs}
    if command == "retain":
        return {"retired": store.retain(int(argv[2])), "logs": logs}
    if command == "verify":
        try:
            with open(os.path.join(work, "expected.json")) as f:
                expected = json.load(f)
        except (OSError, ValueError):
            expected = []
        _, _, published = store.ids()
        problems, checked = [], []
        stored = set(store.stored_contents())
        for cid in published:
            manifest = store.manifest(GEN, cid, cached=False)
            missing = sorted(manifest_shas(manifest) - stored)
            if missing:
                problems.append("checkpoint %s names deleted contents %s" % (cid, missing))
            dest = os.path.join(work, "verify-%s" % cid)
            got, reason = restore_checkpoint(store, GEN, cid, dest, os.path.join(work, "verify-scratch"))
            if got is None:
                problems.append("checkpoint %s does not restore: %s" % (cid, reason))
            elif folder_digest(dest) not in expected:
                problems.append("checkpoint %s restores to a folder state that was never saved" % cid)
            remove_quietly(dest)
            checked.append(cid)
        return {"ok": not problems, "problems": problems, "published": checked, "contents": len(stored)}
    if command == "stats":
        _, ids, published = store.ids()
        contents = store.storage.list_objects(contents_prefix("runs/" + RUN))
        return {"published": published, "ids": ids, "contents": len(contents),
                "contentBytes": sum(size for _, size, _ in contents)}
    return None


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
