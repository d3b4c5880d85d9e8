#!/usr/bin/env python3
"""tiny-trainer: logistic regression trained with momentum SGD on a seeded synthetic data set.

    .venv/bin/python train.py --steps 400 --checkpoint-every 50 [--step-delay 0.06] [--seed 7]

Deterministic to the bit, whatever the interruptions: the data, the initial weights and every
minibatch come from a seeded SplitMix64 (the minibatch of step s is derived from s alone), the
math avoids the C library (tinymath), and a checkpoint stores the full optimiser state as JSON,
whose floats round-trip exactly. So a run stopped and resumed any number of times ends with the
same final-weights.json, byte for byte, as a run that never stopped.

Checkpoints go to $RUNCTL_CHECKPOINT_DIR (./checkpoints when unset): ckpt-<step>.json every
--checkpoint-every steps, written atomically, newest 2 kept. SIGTERM, SIGINT or SIGUSR1: finish
the current step, save a checkpoint, exit 0. On start: resume from the newest readable checkpoint.
At the end: final-weights.json in the same directory.
"""
import argparse
import json
import math
import os
import re
import signal
import sys
import time

import tinymath

FEATURES = 8
SAMPLES = 1024
BATCH = 32
LEARNING_RATE = 0.5
MOMENTUM = 0.9
L2 = 1e-4
KEEP_LOCAL = 2
CKPT = re.compile(r"^ckpt-(\d{8})\.json$")

stop_signal = None


def request_stop(signum, _frame):
    global stop_signal
    stop_signal = signal.Signals(signum).name


def make_data(seed):
    rng = tinymath.SplitMix64(seed)
    true_w = [rng.uniform(-2.0, 2.0) for _ in range(FEATURES)]
    true_b = rng.uniform(-0.5, 0.5)
    xs, ys = [], []
    for _ in range(SAMPLES):
        x = [rng.uniform(-1.0, 1.0) for _ in range(FEATURES)]
        p = tinymath.sigmoid(tinymath.dot(true_w, x) + true_b)
        xs.append(x)
        ys.append(1.0 if rng.uniform() < p else 0.0)
    return xs, ys


def initial_state(seed):
    rng = tinymath.SplitMix64(seed ^ 0x5EED)
    return {"step": 0, "w": [rng.uniform(-0.01, 0.01) for _ in range(FEATURES)], "b": 0.0,
            "vw": [0.0] * FEATURES, "vb": 0.0}


def train_step(state, xs, ys, seed):
    """One momentum-SGD step on the minibatch that belongs to this step number."""
    step = state["step"] + 1
    rng = tinymath.SplitMix64(seed * 1000003 + step)
    batch = [rng.below(SAMPLES) for _ in range(BATCH)]
    w, b = state["w"], state["b"]
    gw = [0.0] * FEATURES
    gb = 0.0
    loss = 0.0
    for i in batch:
        p = tinymath.sigmoid(tinymath.dot(w, xs[i]) + b)
        err = p - ys[i]
        for j in range(FEATURES):
            gw[j] += err * xs[i][j]
        gb += err
        loss -= math.log(max(p if ys[i] == 1.0 else 1.0 - p, 1e-12))  # display only, not state
    vw = [MOMENTUM * v + (g / BATCH + L2 * wj) for v, g, wj in zip(state["vw"], gw, w)]
    vb = MOMENTUM * state["vb"] + gb / BATCH
    state.update(step=step, w=[wj - LEARNING_RATE * v for wj, v in zip(w, vw)], b=b - LEARNING_RATE * vb, vw=vw, vb=vb)
    return loss / BATCH


def write_atomic(path, doc):
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def checkpoints(directory):
    names = [n for n in os.listdir(directory) if CKPT.match(n)] if os.path.isdir(directory) else []
    return sorted(names, reverse=True)


def save_checkpoint(directory, state, seed):
    write_atomic(os.path.join(directory, "ckpt-%08d.json" % state["step"]), dict(state, seed=seed))
    for old in checkpoints(directory)[KEEP_LOCAL:]:
        os.unlink(os.path.join(directory, old))
    # The checkpoint contract (docs/checkpoints.md): runctl syncs this save at once and records
    # its step; without the line it would still be synced every syncInterval, with step unknown.
    print("RUNCTL_CHECKPOINT_SAVED step=%d" % state["step"], flush=True)


def load_newest(directory, seed):
    for name in checkpoints(directory):
        try:
            with open(os.path.join(directory, name)) as f:
                doc = json.load(f)
            if doc.get("seed") != seed or len(doc["w"]) != FEATURES:
                continue
            state = {k: doc[k] for k in ("step", "w", "b", "vw", "vb")}
            return name, state
        except (OSError, ValueError, KeyError):
            print("skipping unreadable checkpoint %s" % name, flush=True)
    return None, None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--checkpoint-every", type=int, default=50)
    parser.add_argument("--step-delay", type=float, default=0.06, help="seconds to pause after each step, so a human can watch")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if args.steps < 1 or args.checkpoint_every < 1 or args.step_delay < 0:
        parser.error("--steps and --checkpoint-every must be >= 1 and --step-delay >= 0")
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        signal.signal(sig, request_stop)

    directory = os.environ.get("RUNCTL_CHECKPOINT_DIR") or "checkpoints"
    os.makedirs(directory, exist_ok=True)
    xs, ys = make_data(args.seed)
    name, state = load_newest(directory, args.seed)
    if state is None:
        state = initial_state(args.seed)
        print("starting from scratch (attempt %s)" % os.environ.get("RUNCTL_ATTEMPT", "-"), flush=True)
    else:
        print("resuming from %s at step %d (attempt %s)" % (name, state["step"], os.environ.get("RUNCTL_ATTEMPT", "-")), flush=True)

    while state["step"] < args.steps:
        if stop_signal:
            break
        loss = train_step(state, xs, ys, args.seed)
        print("step=%d/%d loss=%.6f" % (state["step"], args.steps, loss), flush=True)
        if state["step"] % args.checkpoint_every == 0 or state["step"] == args.steps:
            save_checkpoint(directory, state, args.seed)
        if args.step_delay and not stop_signal:
            time.sleep(args.step_delay)

    if stop_signal:
        if not os.path.exists(os.path.join(directory, "ckpt-%08d.json" % state["step"])):
            save_checkpoint(directory, state, args.seed)
        print("received %s at step %d: checkpoint saved, exiting" % (stop_signal, state["step"]), flush=True)
        return 0

    write_atomic(os.path.join(directory, "final-weights.json"), {"steps": args.steps, "seed": args.seed, "w": state["w"], "b": state["b"]})
    print("done: %d steps, final weights in %s" % (args.steps, os.path.join(directory, "final-weights.json")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
