"""Which training step a checkpoint holds (issue 9: "the step recorded is the step the checkpoint
holds, never the progress at sync time"), and how a job says "this checkpoint is complete".

A job may declare a save, with no library (docs/checkpoints.md, "Saying a checkpoint is complete"):
  - a line on its output:           RUNCTL_CHECKPOINT_SAVED step=1200   (step= optional; a
                                    logging prefix before it is fine: saved_line)
  - a marker file written last:     $RUNCTL_CHECKPOINT_DIR/.runctl-saved  holding `step=1200`,
                                    `1200`, or {"step": 1200} (write a temp name, then rename)
Either makes the agent sync at once and record that step. Jobs that say nothing still get a step
from a recognised layout:
  - Hugging Face Trainer:  checkpoint-<N>/ folders            -> the highest N published
  - PyTorch Lightning:     ...step=<N>...ckpt, per folder:
                           - with a last file (last.ckpt, or last-v<K>.ckpt when Lightning
                             versions it) -> the step that file holds: the N of the step file it
                             is a link to (save_last="link") or has the same bytes as; unknown
                             when it is a copy matching no step file (save_last=True keeps
                             rewriting last.ckpt while the best model's step=N file stays: its N
                             is not the step a `ckpt_path="last"` resume continues from; brk20 F4)
                           - without one -> the highest N in the folder
                           then the highest step among the folders, unknown if any folder's is
                           unknown (a resume may take any last file: never guess which)
  - anything else (nanoGPT's ckpt.pt rewritten in place):     -> unknown (None)
"""

import json
import re

MARKER_FILE = ".runctl-saved"
# The token, at the start of the line or after a space (a logging framework's prefix, such as
# `INFO trainer: `, is the norm), then nothing or `step=<something>` to the end of the line.
SAVED_TOKEN_RE = re.compile(r"(^|\s)RUNCTL_CHECKPOINT_SAVED(?=\s|$)(.*)$")
STEP_VALUE_RE = re.compile(r"^step\s*=\s*(\S*)$")
MAX_STEP = 2 ** 53  # a step must stay exact as a JSON number (the status is read by Node)
VALID_DECLARATION = ("a line ending in `RUNCTL_CHECKPOINT_SAVED` or `RUNCTL_CHECKPOINT_SAVED step=N`, or a marker file "
                     "holding `step=N`, `N` or {\"step\": N}, N a non-negative integer below 2^53")
HF_DIR_RE = re.compile(r"^(?:.*/)?checkpoint-(\d+)$")
LIGHTNING_RE = re.compile(r"(?:^|[^A-Za-z0-9])step=(\d+)[^/]*\.ckpt$")
LIGHTNING_LAST_RE = re.compile(r"^last(?:-v\d+)?\.ckpt$")  # last.ckpt, last-v1.ckpt (Lightning's version counter)


def valid_step(value):
    """The step a declaration's text gives (`123`), or None when it is not a non-negative integer
    below MAX_STEP (`abc`, `-1`, `80.5`, `12abc`, 1e29)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value < MAX_STEP else None
    if isinstance(value, str) and re.match(r"^\d+$", value):
        n = int(value)
        return n if n < MAX_STEP else None
    return None


def saved_line(line):
    """(declared, step or None, problem or None) for one line of the job's output.

    `RUNCTL_CHECKPOINT_SAVED` and `RUNCTL_CHECKPOINT_SAVED step=N` declare a save, at the start of
    the line or after a prefix ending in a space (`INFO trainer: RUNCTL_CHECKPOINT_SAVED step=90`).
    A declaration whose step is not a non-negative integer below 2^53 (`step=abc`, `step=-1`,
    `step=80.5`, 30 digits) still declares the save, without a step, and `problem` says why.
    Text after the token that is not `step=...` is a problem only when the token starts the line
    (elsewhere it is a log line that mentions the token, not a declaration)."""
    m = SAVED_TOKEN_RE.search(line)
    if not m:
        return False, None, None
    prefix, rest = line[: m.start()] + m.group(1), m.group(2).strip()
    if not rest:
        return True, None, None
    v = STEP_VALUE_RE.match(rest)
    if v:
        step = valid_step(v.group(1))
        if step is not None:
            return True, step, None
        return True, None, "`%s` is not a step: N must be a non-negative integer below 2^53" % rest
    if prefix.strip():
        return False, None, None
    return True, None, "`%s` after RUNCTL_CHECKPOINT_SAVED is not `step=N`" % rest


def parse_saved_line(line):
    """(True, step or None) for a `RUNCTL_CHECKPOINT_SAVED [step=N]` line, else (False, None)."""
    declared, step, _problem = saved_line(line)
    return declared, step


def marker_step(data):
    """(step or None, problem or None) of the marker file's bytes: `step=N`, `N` or {"step": N};
    empty is a save without a step; anything else is a problem (the save still counts)."""
    text = data.decode("utf-8", "replace").strip()
    if not text:
        return None, None
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    else:
        if isinstance(doc, dict) and "step" in doc:
            step = valid_step(doc["step"]) if not isinstance(doc["step"], str) else None
            if step is None:
                return None, "%s: the step must be a JSON integer from 0 to 2^53-1" % json.dumps(doc["step"])
            return step, None
        if isinstance(doc, (int, float)) and not isinstance(doc, bool):
            step = valid_step(doc)
            return (step, None) if step is not None else (None, "%s is not a non-negative integer below 2^53" % text)
    m = re.match(r"^(?:step\s*[=:]\s*)?(\S+)$", text)
    if m:
        step = valid_step(m.group(1))
        if step is not None:
            return step, None
    return None, "`%s` is not `step=N`, `N` or {\"step\": N} with N a non-negative integer below 2^53" % text[:80]


def parse_marker(data):
    """The step written in the marker file (bytes): `step=N`, `N` or {"step": N}; None if absent."""
    return marker_step(data)[0]


def hf_folder(path):
    """The `checkpoint-<N>` folder (path prefix) a file path lies in, and N; (None, None) otherwise."""
    parts = path.split("/")
    for i in range(len(parts) - 1):
        m = HF_DIR_RE.match(parts[i])
        if m:
            return "/".join(parts[: i + 1]), int(m.group(1))
    return None, None


def _folder(path):
    return path.rsplit("/", 1)[0] if "/" in path else ""


def _name(path):
    return path.rsplit("/", 1)[-1]


def _named_step(path):
    """N of a `...step=N...ckpt` file name; None for any other name."""
    m = LIGHTNING_RE.search(_name(path))
    return int(m.group(1)) if m else None


def layout_step(paths, dirs=()):
    """(step, source) read from the names of the published paths (files and folders), or
    (None, None). Hugging Face folders win over Lightning names when both appear; Lightning names
    give the highest N (lightning_layout_step also reads last.ckpt, which may overrule it)."""
    hf = []
    for p in list(paths) + [d for d in dirs]:
        _, n = hf_folder(p + "/x") if p in dirs else hf_folder(p)
        if n is not None:
            hf.append(n)
    if hf:
        return max(hf), "huggingface"
    lightning = [n for n in (_named_step(p) for p in paths) if n is not None]
    if lightning:
        return max(lightning), "lightning"
    return None, None


def last_steps(files, symlinks=()):
    """{folder: [step or None, ...]}: the step each Lightning last file (last.ckpt, last-v<K>.ckpt)
    holds, knowable without unpickling it only as a symbolic link to a `...step=N...ckpt` file
    (save_last="link") or the same content (sha256) as one; None for a copy matching no step file
    (save_last=True rewriting last.ckpt after the best model's file: brk20 F4). files: manifest file
    entries ({"path", "sha256"}); symlinks: {"path", "target"}. Folders without a last file are
    absent."""
    by_sha = {}
    for f in files:
        n = _named_step(f["path"])
        if n is not None:
            by_sha.setdefault(f["sha256"], []).append(n)
    found = {}
    for f in files:
        if LIGHTNING_LAST_RE.match(_name(f["path"])):
            same = by_sha.get(f["sha256"])
            found.setdefault(_folder(f["path"]), []).append(max(same) if same else None)
    for s in symlinks:
        if LIGHTNING_LAST_RE.match(_name(s["path"])):
            found.setdefault(_folder(s["path"]), []).append(_named_step(s["target"]))
    return found


def known(steps):
    """The highest of steps, or None when it is empty or any is unknown (None): a resume may take
    any of them (Lightning's ckpt_path="last" takes the newest last file), so never guess."""
    if not steps or any(n is None for n in steps):
        return None
    return max(steps)


def lightning_layout_step(files, symlinks=()):
    """(step, "lightning") of a Lightning layout, or (None, None). Per folder: the step its last
    file holds when it has one (unknown when that is a copy matching no step file: brk20 F4), else
    its highest `step=N` name; then the highest over the folders, unknown if any folder's is."""
    per_folder = {}
    for f in files:
        n = _named_step(f["path"])
        if n is not None:
            per_folder.setdefault(_folder(f["path"]), []).append(n)
    lasts = last_steps(files, symlinks)
    if not per_folder and not lasts:
        return None, None
    steps = [known(lasts[d]) if d in lasts else max(per_folder[d]) for d in set(per_folder) | set(lasts)]
    step = known(steps)
    return (step, "lightning") if step is not None else (None, None)


def published_step(files, dirs=(), symlinks=()):
    """(step, source) the layout of a checkpoint's published entries gives: Hugging Face folders
    first (layout_step), else Lightning's (lightning_layout_step), else (None, None). files,
    symlinks: manifest entries; dirs: folder paths."""
    step, source = layout_step([f["path"] for f in files], dirs)
    if source == "huggingface":
        return step, source
    return lightning_layout_step(files, symlinks)
