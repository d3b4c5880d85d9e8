"""Which training step a checkpoint holds (issue 9: "the step recorded is the step the checkpoint
holds, never the progress at sync time"), and how a job says "this checkpoint is complete".

A job may declare a save, with no library (docs/checkpoints.md, "Saying a checkpoint is complete"):
  - a line on its output:           RUNCTL_CHECKPOINT_SAVED step=1200   (step= optional)
  - a marker file written last:     $RUNCTL_CHECKPOINT_DIR/.runctl-saved  holding `step=1200`,
                                    `1200`, or {"step": 1200} (write a temp name, then rename)
Either makes the agent sync at once and record that step. Jobs that say nothing still get a step
from a recognised layout:
  - Hugging Face Trainer:  checkpoint-<N>/ folders            -> the highest N published
  - PyTorch Lightning:     ...step=<N>...ckpt                 -> the highest N published;
                           last.ckpt, when it is a link to such a file or holds the same bytes
                           (Lightning's save_last="link", or a copy), gives that file's N
  - anything else (nanoGPT's ckpt.pt rewritten in place):     -> unknown (None)
"""

import json
import re

MARKER_FILE = ".runctl-saved"
SAVED_LINE_RE = re.compile(r"^\s*RUNCTL_CHECKPOINT_SAVED(?:\s+step\s*=\s*(\d+))?\s*$")
HF_DIR_RE = re.compile(r"^(?:.*/)?checkpoint-(\d+)$")
LIGHTNING_RE = re.compile(r"(?:^|[^A-Za-z0-9])step=(\d+)[^/]*\.ckpt$")


def parse_saved_line(line):
    """(True, step or None) for a `RUNCTL_CHECKPOINT_SAVED [step=N]` line, else (False, None)."""
    m = SAVED_LINE_RE.match(line)
    if not m:
        return False, None
    return True, (int(m.group(1)) if m.group(1) else None)


def parse_marker(data):
    """The step written in the marker file (bytes): `step=N`, `N` or {"step": N}; None if absent."""
    text = data.decode("utf-8", "replace").strip()
    if not text:
        return None
    try:
        doc = json.loads(text)
        if isinstance(doc, dict) and isinstance(doc.get("step"), int) and not isinstance(doc.get("step"), bool):
            return doc["step"] if doc["step"] >= 0 else None
        if isinstance(doc, int) and not isinstance(doc, bool):
            return doc if doc >= 0 else None
    except ValueError:
        pass
    m = re.match(r"^(?:step\s*[=:]\s*)?(\d+)$", text)
    return int(m.group(1)) if m else None


def hf_folder(path):
    """The `checkpoint-<N>` folder (path prefix) a file path lies in, and N; (None, None) otherwise."""
    parts = path.split("/")
    for i in range(len(parts) - 1):
        m = HF_DIR_RE.match(parts[i])
        if m:
            return "/".join(parts[: i + 1]), int(m.group(1))
    return None, None


def layout_step(paths, dirs=()):
    """(step, source) read from the layout of the published paths (files and folders), or
    (None, None). Hugging Face folders win over Lightning names when both appear."""
    hf = []
    for p in list(paths) + [d for d in dirs]:
        _, n = hf_folder(p + "/x") if p in dirs else hf_folder(p)
        if n is not None:
            hf.append(n)
    if hf:
        return max(hf), "huggingface"
    lightning = [int(m.group(1)) for m in (LIGHTNING_RE.search(p.rsplit("/", 1)[-1]) for p in paths) if m]
    if lightning:
        return max(lightning), "lightning"
    return None, None


def lightning_step(files, symlinks=()):
    """The step of Lightning's `last.ckpt` when knowable without unpickling it: a symbolic link to
    a `...step=N...ckpt` file, or the same content (sha256) as one. files: manifest file entries
    ({"path", "sha256"}); symlinks: {"path", "target"}. None otherwise."""
    by_sha = {}
    for f in files:
        m = LIGHTNING_RE.search(f["path"].rsplit("/", 1)[-1])
        if m:
            by_sha.setdefault(f["sha256"], []).append(int(m.group(1)))
    steps = []
    for f in files:
        if f["path"].rsplit("/", 1)[-1] == "last.ckpt" and f["sha256"] in by_sha:
            steps.append(max(by_sha[f["sha256"]]))
    for s in symlinks:
        if s["path"].rsplit("/", 1)[-1] == "last.ckpt":
            m = LIGHTNING_RE.search(s["target"].rsplit("/", 1)[-1])
            if m:
                steps.append(int(m.group(1)))
    return max(steps) if steps else None
