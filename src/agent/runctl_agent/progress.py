"""Reading a training job's progress from what it prints (docs/progress.md, issue 13).

Recognised without configuration (each checked against the real frameworks' output formats):
  tqdm        `desc: 45%|####| 450/1000 [00:10<00:12, 43.1it/s, loss=2.31]`, also redrawn with
              carriage returns, and `450it [00:10, 43.1it/s]` without a total; the postfix's
              `name=number` pairs are metrics
  Lightning   its tqdm bar `Epoch 3:  45%|####| 450/1000 [..., v_num=0, train_loss=2.310]`: the
              step is the batch within the epoch (as the bar draws it), `epoch` a metric; its
              validation/sanity-check/test bars are not training progress
  Hugging Face Trainer  log dicts `{'loss': 2.31, 'grad_norm': 1.2, 'learning_rate': 5e-05,
              'epoch': 0.4}` (numbers also as `np.float64(2.31)`), the step from a `step` key
              or from the Trainer's tqdm bar
  nanoGPT     `iter 10: loss 3.1234, time 12.34ms, mfu 1.23%` and
              `step 100: train loss 2.9000, val loss 3.0000`
  generic     `step=12/400 loss=0.31` (`step: 12`, `Loss: 1e-3`)
or, when the run sets spec.progress.pattern, only by that pattern: its ECMAScript form is checked
and translated to Python's `re` by runctl (src/spec/progress-pattern.ts) before it gets here.

A Tracker is fed the job's output one line state at a time (a line, or one carriage-return
redraw of it) and keeps what the status shows (step, total, loss, metrics) and, per state that
moved, the point to add to the history (progress_history.py).
"""

import math
import re

ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
# Most metric names one attempt keeps (status and history): bounds both, whatever the job prints.
MAX_METRICS = 16
MAX_NAME = 48
# Only the end of a very long line is read: a bar or a log dict fits, and a pattern never runs on
# megabytes (a user's pattern may backtrack badly on long input).
MAX_LINE = 4096

# tqdm's default r_bar: `| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]`; and
# without a total `{n_fmt}{unit} [{elapsed}, {rate_fmt}{postfix}]` (tqdm/std.py format_meter).
TQDM_TOTAL_RE = re.compile(
    r"(?:(?P<pct>\d{1,3})%\|(?P<bar>[^|]*)\|\s*)?(?P<n>\d+)/(?P<total>\d+)\s*"
    r"\[(?P<elapsed>[\d:]+)<(?P<remaining>[\d:?]+)(?:,\s*(?P<rest>[^\]]*))?\]")
TQDM_NOTOTAL_RE = re.compile(
    r"(?:^|[\s:])(?P<n>\d+)(?P<unit>[A-Za-z]*) \[(?P<elapsed>\d+:\d\d(?::\d\d)?)(?:,\s*(?P<rest>[^\]]*))?\]")
RATE_RE = re.compile(r"^\s*(?:%s|\?)\s*[A-Za-z]*/[A-Za-z]+" % NUM)
POSTFIX_RE = re.compile(r"([A-Za-z_][\w./-]*)=(%s)(?=,|$|\s)" % NUM)
LIGHTNING_EPOCH_RE = re.compile(r"^Epoch (\d+)\b")
# Lightning's bars that are not training progress (pytorch_lightning/callbacks/progress/tqdm_progress.py).
NOT_TRAINING_BAR_RE = re.compile(r"^(Validation|Sanity Checking|Testing|Predicting)\b")
# Numbers in a Python dict printed with str(): `'name': 2.31`, `'name': np.float64(2.31)`, `'name': tensor(2.31)`.
HF_DICT_LINE_RE = re.compile(r"^\s*\{'[^']+':.*\}\s*$")
HF_PAIR_RE = re.compile(r"'([^'\n]{1,%d})':\s*(?:[A-Za-z_][\w.]*\()?(%s)\b" % (MAX_NAME, NUM))
HF_KEYS = ("loss", "train_loss", "eval_loss", "learning_rate", "epoch", "grad_norm", "train_runtime")
NANOGPT_ITER_RE = re.compile(r"^\s*iter (\d+): loss (%s)(.*)$" % NUM)
NANOGPT_STEP_RE = re.compile(r"^\s*step (\d+): train loss (%s), val loss (%s)" % (NUM, NUM))
NANOGPT_EXTRA_RE = re.compile(r",\s*([A-Za-z_]+) (%s)(ms|%%|s)?" % NUM)
GENERIC_STEP_RE = re.compile(r"\bstep\s*[=:]\s*(\d+)(?:\s*/\s*(\d+))?")
GENERIC_LOSS_RE = re.compile(r"\bloss\s*[=:]\s*(%s|nan|inf)" % NUM, re.I)


def number(text):
    """A finite float from text, or None (nan, inf and garbage are left out)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def integer(text):
    """A non-negative int from digits or an integral float (`1e3`), or None."""
    value = number(text)
    if value is None or value < 0 or value != int(value):
        return None
    return int(value)


def clean(text):
    """The line as a terminal shows it: escape codes out, at most its last MAX_LINE characters."""
    if "\x1b" in text:
        text = ANSI_RE.sub("", text)
    return text[-MAX_LINE:].strip()


def parse_tqdm(line):
    """{"n", "total"?, "desc", "postfix": {name: value}} for a tqdm bar state, or None."""
    m = TQDM_TOTAL_RE.search(line)
    if m:
        total = int(m.group("total"))
        start = m.start("pct") if m.group("pct") is not None else m.start("n")
        out = {"n": int(m.group("n")), "total": total}
    else:
        m = TQDM_NOTOTAL_RE.search(line)
        if not m:
            return None
        start = m.start("n")
        out = {"n": int(m.group("n"))}
    rest = m.group("rest") or ""
    postfix = {}
    rate = RATE_RE.match(rest)
    if rate or not rest:
        for name, value in POSTFIX_RE.findall(rest[rate.end():] if rate else ""):
            v = number(value)
            if v is not None:
                postfix[name] = v
    out["postfix"] = postfix
    out["desc"] = line[:start].strip().rstrip(":").strip()
    return out


def parse_hf_dict(line):
    """({name: value}, step or None) for a Hugging Face Trainer log dict, or None."""
    if not HF_DICT_LINE_RE.match(line):
        return None
    values = {}
    for name, value in HF_PAIR_RE.findall(line):
        v = number(value)
        if v is not None:
            values[name] = v
    if not any(k in values for k in HF_KEYS):
        return None
    step = None
    for key in ("step", "global_step"):
        if key in values:
            step = integer(values.pop(key))
    return values, step


def parse_nanogpt(line):
    """{"step", "loss"?, "metrics"} for nanoGPT's `iter N: loss X, ...` or `step N: train loss X, val loss Y`, or None."""
    m = NANOGPT_ITER_RE.match(line)
    if m:
        metrics = {}
        for name, value, unit in NANOGPT_EXTRA_RE.findall(m.group(3)):
            v = number(value)
            if v is None or (name == "mfu" and v < 0):
                continue  # nanoGPT prints mfu -100.00% until it has measured it
            metrics[name + ("_ms" if unit == "ms" else "")] = v
        return {"step": int(m.group(1)), "loss": number(m.group(2)), "metrics": metrics}
    m = NANOGPT_STEP_RE.match(line)
    if m:
        metrics = {}
        for name, value in (("train_loss", m.group(2)), ("val_loss", m.group(3))):
            v = number(value)
            if v is not None:
                metrics[name] = v
        return {"step": int(m.group(1)), "metrics": metrics}
    return None


def parse_generic(line):
    """{"step", "total"?, "loss"?} from a `step=N[/T] ... loss=X` line, or None."""
    m = GENERIC_STEP_RE.search(line)
    if not m:
        return None
    out = {"step": int(m.group(1)), "metrics": {}}
    if m.group(2):
        out["total"] = int(m.group(2))
    lm = GENERIC_LOSS_RE.search(line)
    if lm:
        out["loss"] = number(lm.group(1))
    return out


class Pattern:
    """spec.progress.pattern, already translated to Python (src/spec/progress-pattern.ts): the
    groups step, total and loss, every other named group a metric. re.ASCII gives \\b the meaning
    it has in ECMAScript; the translation spelled out the classes that differ."""

    def __init__(self, source):
        self.regex = re.compile(source, re.ASCII)

    def parse(self, line):
        m = self.regex.search(line)
        if not m:
            return None
        out = {"metrics": {}}
        for name, text in m.groupdict().items():
            if text is None:
                continue
            if name == "step":
                out["step"] = integer(text)
            elif name == "total":
                out["total"] = integer(text)
            elif name == "loss":
                out["loss"] = number(text)
            else:
                v = number(text)
                if v is not None:
                    out["metrics"][name] = v
        if out.get("step") is None and out.get("loss") is None and not out["metrics"]:
            return None
        return out


class Tracker:
    """What the job's output says about its progress so far. feed(line_state) returns the
    history point (step, total, {metric: value}) that state adds, or None."""

    def __init__(self, pattern=None):
        self.pattern = Pattern(pattern) if pattern else None
        self.step = None
        self.total = None
        self.loss = None
        self.metrics = {}
        self.history_step = None
        self.bar = None  # the bar taken as training progress: {"total", "desc"}

    def progress(self):
        """The status's progress ({step, total?, loss?, metrics?}), or None before a step is known."""
        if self.step is None:
            return None
        out = {"step": self.step}
        if self.total is not None:
            out["total"] = self.total
        if self.loss is not None:
            out["loss"] = self.loss
        if self.metrics:
            out["metrics"] = dict(self.metrics)
        return out

    FIELDS = ("step", "total", "loss", "metrics", "history_step", "bar")

    def snapshot(self):
        """The tracker's state as JSON-able data, for a restarted agent (restore)."""
        return {name: getattr(self, name) for name in self.FIELDS}

    def restore(self, state):
        """Continue from snapshot() data; anything malformed is ignored (the next line sets it)."""
        if not isinstance(state, dict):
            return
        for name in self.FIELDS:
            if name not in state:
                continue
            value = state[name]
            if name == "metrics" and not isinstance(value, dict):
                continue
            if name == "bar" and not (value is None or isinstance(value, dict)):
                continue
            if name in ("step", "total", "history_step") and not (value is None or isinstance(value, int)):
                continue
            if name == "loss" and not (value is None or isinstance(value, (int, float))):
                continue
            setattr(self, name, value)

    def feed(self, line):
        line = clean(line)
        if not line or line.startswith("RUNCTL_CHECKPOINT_SAVED") or line.startswith("RUNCTL_CHECKPOINT "):
            return None  # a declared save (steps.py), not progress
        if self.pattern is not None:
            return self.apply(self.pattern.parse(line))
        # Most lines of a chatty job are none of the formats; these tests are far cheaper than
        # the regular expressions below (every format has one of these marks).
        if "[" not in line and "step" not in line and not line.startswith("{") and not line.startswith("iter "):
            return None
        if line.startswith("{"):
            logged = parse_hf_dict(line)
            if logged is not None:
                values, step = logged
                loss = values.pop("loss", None)
                return self.apply({"step": step, "loss": loss, "metrics": values})
        elif line.startswith("iter ") or line.startswith("step "):
            found = parse_nanogpt(line)
            if found is not None:
                return self.apply(found)
        if "[" in line:
            bar = parse_tqdm(line)
            if bar is not None:
                return self.apply_bar(bar)
        return self.apply(parse_generic(line))

    def apply_bar(self, bar):
        desc = bar["desc"]
        if NOT_TRAINING_BAR_RE.match(desc):
            return None
        total = bar.get("total")
        current = self.bar
        # A bar with another total is nested in the training bar or follows it (the Trainer's
        # evaluation bar, a data-loading bar), unless it counts further: only then is it training.
        if current is not None and total != current["total"] and current["total"] is not None:
            if total is None or total < current["total"]:
                return None
        self.bar = {"total": total, "desc": desc}
        metrics = dict(bar["postfix"])
        metrics.pop("v_num", None)  # Lightning's logger version, not a measurement
        loss = metrics.pop("loss", None)
        if loss is None:
            loss = metrics.pop("train_loss", None)
        found = {"step": bar["n"], "total": total, "loss": loss, "metrics": metrics}
        epoch = LIGHTNING_EPOCH_RE.match(desc)
        if epoch:
            found["metrics"]["epoch"] = float(epoch.group(1))
            if total:
                found["history_step"] = int(epoch.group(1)) * total + bar["n"]
        return self.apply(found, bar=True)

    def apply(self, found, bar=False):
        """Merge one observation; a point for the history when a step is known."""
        if found is None:
            return None
        step = found.get("step")
        if step is not None:
            self.step = step
            self.history_step = found.get("history_step", step)
            if bar or "total" in found:
                self.total = found.get("total")
        loss = found.get("loss")
        if loss is not None:
            self.loss = loss
        metrics = {}
        for name, value in found.get("metrics", {}).items():
            name = name[:MAX_NAME]
            if name in self.metrics or len(self.metrics) < MAX_METRICS:
                self.metrics[name] = value
                metrics[name] = value
        if self.step is None:
            return None
        if loss is not None:
            metrics["loss"] = loss
        return self.history_step, self.total, metrics
