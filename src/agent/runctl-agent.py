#!/usr/bin/env python3
"""runctl-agent: supervises one attempt of one training run on one instance.

    python3 runctl-agent.py --config /path/config.json [--detach | --probe]

Needs only python3 (3.7+ standard library), bash, and for s3:// storage or ssm: secrets the
AWS CLI. The config document is AgentConfig (src/agent/config-types.ts). Storage layout is
src/agent/layout.ts; the status object is AgentStatus (src/providers/types.ts).

Safe to start any number of times: a second agent for the same state directory exits 0 while
the first is alive, and an agent started after a dead one adopts the job that is still running
(or reports the exit code the job left behind) instead of starting a second job.

Files in stateDir (documented in docs/agent.md):
  agent.lock    flock held by the live agent (liveness test)
  agent.pid     the live agent's pid
  job.pgid      process group of the running child (setup or command); kill this group to stop it
  job.json      the training job's pid, pgid, start time and log offset (adoption record)
  setup.json    the same for the setup step
  job.exit      exit code of the training job, written atomically by its wrapper
  setup.exit    exit code of setup
  job.log       combined output of setup and command (shipped to storage as log segments)
  result.json   the final status once the attempt has ended (a restarted agent re-publishes it)
  agent.log     the agent's own actions
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import gzip
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone

LOG_TAIL_LINES = 20
TAIL_WINDOW_BYTES = 64 * 1024
SEGMENT_MAX_BYTES = 4 * 1024 * 1024
MANIFEST_NAME = "MANIFEST.json"
STRAGGLER_GRACE_SECONDS = 5.0
IMDS_TIMEOUT_SECONDS = 1.0
IMDS_TOKEN_TTL_SECONDS = 21600
MIN_REDACTED_SECRET_LENGTH = 4
SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR1", "SIGUSR2", "SIGHUP", "SIGQUIT")

# The job runs under this bash wrapper so its pid and exit code outlive the agent: the wrapper is
# the process-group leader, records its own pid first (an agent killed right after starting it
# still leaves a trace to adopt), traps (does not ignore, so children keep default dispositions)
# the stop signals while the command runs, and writes the exit code with write-temp-then-rename.
# $1 = command, $2 = exit-code file, $3 = pid file. Config values are arguments, never interpolated.
WRAPPER_SCRIPT = (
    'printf "%s\\n" "$$" > "$3.tmp" && mv -f "$3.tmp" "$3"; '
    'trap ":" HUP INT QUIT TERM USR1 USR2; '
    'bash -c "$1"; code=$?; '
    'printf "%s\\n" "$code" > "$2.tmp" && mv -f "$2.tmp" "$2"; '
    'exit "$code"'
)

LAUNCH_TRACE_WAIT_SECONDS = 10.0

PROGRESS_RE = re.compile(r"\bstep\s*[=:]\s*(\d+)(?:\s*/\s*(\d+))?")
LOSS_RE = re.compile(r"\bloss\s*[=:]\s*([-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|nan|inf))", re.I)


# ----------------------------------------------------------------------------- small helpers

def now_iso():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def pad_seq(n):
    return "%08d" % n


def atomic_write(path, data):
    tmp = "%s.tmp-%d-%d" % (path, os.getpid(), threading.get_ident())
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def json_bytes(obj):
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8")


def read_json(path):
    try:
        with open(path, "rb") as f:
            return json.loads(f.read().decode("utf-8"))
    except (OSError, ValueError):
        return None


def read_int(path):
    try:
        with open(path, "r") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def remove_quietly(path):
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
    except OSError:
        pass


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1024 * 1024), b""):
            h.update(chunk)
    return h.hexdigest()


def safe_relpath(rel):
    """A manifest or archive path that stays inside its directory."""
    if not rel or rel.startswith("/") or "\\" in rel:
        return False
    parts = rel.split("/")
    return all(p not in ("", ".", "..") for p in parts)


# ----------------------------------------------------------------------------- config

class ConfigError(Exception):
    pass


def load_config(path):
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")
    except OSError as e:
        raise ConfigError("cannot read config %s: %s" % (path, e.strerror or e))
    try:
        cfg = json.loads(text)
    except ValueError as e:
        raise ConfigError("config %s is not valid JSON: %s" % (path, e))
    if not isinstance(cfg, dict):
        raise ConfigError("config %s must be a JSON object" % path)

    def need(field, kind, check=None, what=None):
        if field not in cfg:
            raise ConfigError("config %s: missing required field '%s'" % (path, field))
        value = cfg[field]
        ok = isinstance(value, kind) and not (kind in (int, float, (int, float)) and isinstance(value, bool))
        if ok and check is not None:
            ok = check(value)
        if not ok:
            raise ConfigError("config %s: field '%s' must be %s, got %s" % (path, field, what or kind.__name__, json.dumps(value)))
        return value

    def optional(field, kind, what):
        if field in cfg and cfg[field] is not None:
            need(field, kind, None, what)

    positive = lambda v: v > 0  # noqa: E731
    absolute = lambda v: os.path.isabs(v)  # noqa: E731
    need("run", str, lambda v: bool(v), "a non-empty string")
    need("generation", int, lambda v: v >= 0, "a non-negative integer")
    need("attempt", int, lambda v: v >= 1, "an integer >= 1")
    need("resuming", bool, None, "true or false")
    need("storage", str, lambda v: v.startswith("file:///") or v.startswith("s3://"), "a file:///absolute/path or s3://bucket/prefix URL")
    need("bundleKey", str, safe_relpath, "a storage key such as bundles/<sha256>.tar.gz")
    need("stateDir", str, absolute, "an absolute path")
    need("workDir", str, absolute, "an absolute path")
    need("checkpointDir", str, absolute, "an absolute path")
    optional("setup", str, "a string")
    need("command", str, lambda v: bool(v.strip()), "a non-empty shell command")
    need("env", dict, lambda v: all(isinstance(k, str) and isinstance(x, str) for k, x in v.items()), "an object of string values")
    need("secrets", dict, lambda v: all(re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", k) and isinstance(x, str) and re.match(r"^ssm:/?[A-Za-z0-9_.\-/]+$", x)
                                        for k, x in v.items()), "an object mapping environment variable names to 'ssm:/parameter/path' references")
    need("syncIntervalSeconds", (int, float), positive, "a positive number")
    need("keep", int, lambda v: v >= 1, "an integer >= 1")
    need("signal", str, lambda v: v in SIGNALS, "one of " + ", ".join(SIGNALS))
    need("gracePeriodSeconds", (int, float), lambda v: v >= 0, "a non-negative number")
    need("imdsUrl", str, lambda v: v.startswith("http://") or v.startswith("https://"), "an http:// URL")
    need("heartbeatSeconds", (int, float), positive, "a positive number")
    need("noticePollSeconds", (int, float), positive, "a positive number")
    optional("s3EndpointUrl", str, "a URL")
    optional("ssmEndpointUrl", str, "a URL")
    optional("region", str, "a region name")
    if cfg.get("seedGeneration") is not None:
        need("seedGeneration", int, lambda v: v >= 0, "a non-negative integer")
    return cfg


# ----------------------------------------------------------------------------- agent's own log

class AgentLog:
    def __init__(self, path, redact):
        self.path = path
        self.redact = redact
        self.lock = threading.Lock()

    def __call__(self, message):
        line = "%s [%d] %s\n" % (now_iso(), os.getpid(), self.redact(message))
        with self.lock:
            try:
                with open(self.path, "a") as f:
                    f.write(line)
            except OSError:
                pass


# ----------------------------------------------------------------------------- storage

class StorageError(Exception):
    pass


class FileStorage:
    """Storage in a local folder (`file:///abs/dir`); every write is temp-then-rename."""

    def __init__(self, url):
        self.root = urllib.parse.unquote(urllib.parse.urlparse(url).path)

    def _path(self, key):
        if not safe_relpath(key.rstrip("/")):
            raise StorageError("unsafe storage key %r" % key)
        return os.path.join(self.root, *key.rstrip("/").split("/"))

    def put_bytes(self, key, data):
        path = self._path(key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write(path, data)

    def put_file(self, key, local):
        path = self._path(key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = "%s.tmp-%d" % (path, os.getpid())
        shutil.copyfile(local, tmp)
        os.replace(tmp, path)

    def put_tree(self, prefix, local_dir):
        for rel in list_files(local_dir):
            self.put_file(prefix + rel, os.path.join(local_dir, *rel.split("/")))

    def get_bytes(self, key):
        try:
            with open(self._path(key), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StorageError("cannot read %s: %s" % (self._path(key), e))

    def get_file(self, key, dest):
        try:
            shutil.copyfile(self._path(key), dest)
            return True
        except FileNotFoundError:
            return False

    def get_tree(self, prefix, local_dir):
        base = self._path(prefix)
        for rel in list_files(base):
            dest = os.path.join(local_dir, *rel.split("/"))
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            shutil.copyfile(os.path.join(base, *rel.split("/")), dest)

    def list_keys(self, prefix):
        """Keys under prefix (recursive), relative to prefix; temp files of writers excluded."""
        base = self._path(prefix)
        return [k for k in list_files(base) if ".tmp-" not in k.rsplit("/", 1)[-1]]

    def delete(self, key):
        try:
            os.unlink(self._path(key))
        except FileNotFoundError:
            pass

    def delete_prefix(self, prefix):
        shutil.rmtree(self._path(prefix), ignore_errors=True)


class S3Storage:
    """Storage in S3 through the AWS CLI, with bounded retries."""

    ATTEMPTS = 5

    def __init__(self, url, endpoint, region, log):
        self.base = url.rstrip("/")
        parsed = urllib.parse.urlparse(self.base)
        self.bucket = parsed.netloc
        self.prefix = parsed.path.lstrip("/")
        self.common = []
        if endpoint:
            self.common += ["--endpoint-url", endpoint]
        if region:
            self.common += ["--region", region]
        self.log = log
        self.env = dict(os.environ, AWS_PAGER="")

    def _url(self, key):
        return self.base + "/" + key

    def _aws(self, args, stdin_data=None, missing_ok=False, empty_ok=False):
        cmd = ["aws"] + args + self.common
        delay = 0.5
        for attempt in range(1, self.ATTEMPTS + 1):
            try:
                proc = subprocess.run(cmd, input=stdin_data, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env)
            except FileNotFoundError:
                raise StorageError("the AWS CLI (`aws`) is not installed or not on PATH; it is needed for s3:// storage")
            if proc.returncode == 0:
                return proc.stdout
            err = proc.stderr.decode("utf-8", "replace").strip()
            if empty_ok and proc.returncode == 1 and not err:
                return b""  # `aws s3 ls` exits 1, silently, when nothing matches
            if missing_ok and re.search(r"\(404\)|Not Found|NoSuchKey|does not exist", err):
                return None
            if re.search(r"AccessDenied|\(403\)|NoSuchBucket|InvalidAccessKeyId|SignatureDoesNotMatch|Unable to locate credentials", err):
                raise StorageError("aws %s %s failed: %s" % (args[0], args[1], err))
            if attempt == self.ATTEMPTS:
                raise StorageError("aws %s %s failed after %d attempts: %s" % (args[0], args[1], attempt, err))
            self.log("aws %s %s failed (attempt %d/%d), retrying: %s" % (args[0], args[1], attempt, self.ATTEMPTS, err[-300:]))
            time.sleep(delay + random.random() * delay)
            delay = min(delay * 2, 8.0)

    def put_bytes(self, key, data):
        content_type = ["--content-type", "application/json"] if key.endswith(".json") else []
        self._aws(["s3", "cp", "--only-show-errors", "-", self._url(key)] + content_type, stdin_data=data)

    def put_file(self, key, local):
        self._aws(["s3", "cp", "--only-show-errors", local, self._url(key)])

    def put_tree(self, prefix, local_dir):
        self._aws(["s3", "cp", "--only-show-errors", "--recursive", local_dir, self._url(prefix)])

    def get_bytes(self, key):
        return self._aws(["s3", "cp", "--only-show-errors", self._url(key), "-"], missing_ok=True)

    def get_file(self, key, dest):
        return self._aws(["s3", "cp", "--only-show-errors", self._url(key), dest], missing_ok=True) is not None

    def get_tree(self, prefix, local_dir):
        self._aws(["s3", "cp", "--only-show-errors", "--recursive", self._url(prefix), local_dir])

    def list_keys(self, prefix):
        out = self._aws(["s3", "ls", "--recursive", self._url(prefix)], empty_ok=True)
        full_prefix = (self.prefix + "/" if self.prefix else "") + prefix
        keys = []
        for line in out.decode("utf-8", "replace").splitlines():
            parts = line.split(None, 3)
            if len(parts) == 4 and parts[3].startswith(full_prefix):
                keys.append(parts[3][len(full_prefix):])
        return keys

    def delete(self, key):
        self._aws(["s3", "rm", "--only-show-errors", self._url(key)])

    def delete_prefix(self, prefix):
        self._aws(["s3", "rm", "--only-show-errors", "--recursive", self._url(prefix)])


def list_files(base):
    """Regular files under base, as sorted forward-slash relative paths; symlinks are not followed."""
    out = []
    if not os.path.isdir(base):
        return out
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
        for name in filenames:
            full = os.path.join(dirpath, name)
            if os.path.isfile(full) and not os.path.islink(full):
                out.append(os.path.relpath(full, base).replace(os.sep, "/"))
    out.sort()
    return out


# ----------------------------------------------------------------------------- IMDSv2

class Imds:
    def __init__(self, base, log):
        self.base = base.rstrip("/")
        self.log = log
        self.token = None
        self.token_at = 0.0
        self.reachable = None

    def _request(self, method, path, headers):
        req = urllib.request.Request(self.base + path, method=method, headers=headers, data=b"" if method == "PUT" else None)
        try:
            with urllib.request.urlopen(req, timeout=IMDS_TIMEOUT_SECONDS) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, b""

    def _get(self, path):
        for _ in range(2):
            if self.token is None or time.monotonic() - self.token_at > IMDS_TOKEN_TTL_SECONDS - 60:
                code, body = self._request("PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": str(IMDS_TOKEN_TTL_SECONDS)})
                if code != 200:
                    raise OSError("IMDS token request returned HTTP %d" % code)
                self.token = body.decode("ascii", "replace").strip()
                self.token_at = time.monotonic()
            code, body = self._request("GET", path, {"X-aws-ec2-metadata-token": self.token})
            if code == 401:
                self.token = None
                continue
            return code, body
        return 401, b""

    def poll(self):
        """(spot notice or None, rebalance recommendation or None). Unreachable IMDS = no notice."""
        try:
            code, body = self._get("/latest/meta-data/spot/instance-action")
            notice = None
            if code == 200:
                try:
                    notice = json.loads(body.decode("utf-8"))
                    if not isinstance(notice, dict):
                        notice = {"action": str(notice)}
                except ValueError:
                    notice = {"action": body.decode("utf-8", "replace").strip() or "terminate"}
            rebalance = None
            code, body = self._get("/latest/meta-data/events/recommendations/rebalance")
            if code == 200:
                try:
                    rebalance = json.loads(body.decode("utf-8"))
                except ValueError:
                    rebalance = {"noticeTime": body.decode("utf-8", "replace").strip()}
            if self.reachable is not True:
                self.log("IMDS reachable at %s" % self.base)
                self.reachable = True
            return notice, rebalance
        except (OSError, urllib.error.URLError, ValueError) as e:
            if self.reachable is not False:
                self.log("IMDS at %s unreachable (%s); no spot notices can be seen while it is" % (self.base, e))
                self.reachable = False
            return None, None


# ----------------------------------------------------------------------------- processes

def process_start_time(pid):
    """Kernel start time of pid (guards against pid reuse), or None where /proc is absent."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            stat = f.read().decode("ascii", "replace")
        return stat[stat.rindex(")") + 2:].split()[19]
    except (OSError, ValueError, IndexError):
        return None


def process_alive(pid, start_time=None):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            stat = f.read().decode("ascii", "replace")
        rest = stat[stat.rindex(")") + 2:].split()
        if rest[0] in ("Z", "X"):
            return False
        if start_time is not None and rest[19] != start_time:
            return False
        return True
    except FileNotFoundError:
        if os.path.isdir("/proc/self"):
            return False
    except (OSError, ValueError, IndexError):
        pass
    try:  # no /proc (macOS): a zombie still answers kill(0)
        out = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout
        state = out.decode("ascii", "replace").strip()
        return bool(state) and not state.startswith("Z")
    except OSError:
        return True


def group_alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def signal_group(pgid, sig):
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False


class Child:
    """A wrapped child (setup or command) in its own session; ours (popen) or adopted (pid only)."""

    def __init__(self, name, pid, start_time, exit_path, popen=None):
        self.name = name
        self.pid = pid
        self.pgid = pid
        self.start_time = start_time
        self.exit_path = exit_path
        self.popen = popen

    def running(self):
        if self.popen is not None:
            return self.popen.poll() is None
        return process_alive(self.pid, self.start_time)

    def exit_code(self):
        return read_int(self.exit_path)


# ----------------------------------------------------------------------------- the agent

class StopRequest:
    def __init__(self, kind, reason, message):
        self.kind = kind  # "interrupt" (spot notice) or "stop" (controller)
        self.reason = reason
        self.message = message


class Agent:
    def __init__(self, cfg, log):
        self.cfg = cfg
        self.log = log
        self.key = {"run": cfg["run"], "generation": cfg["generation"], "attempt": cfg["attempt"]}
        gen_prefix = "runs/%s/g%d" % (cfg["run"], cfg["generation"])
        self.attempt_prefix = "%s/a%d/" % (gen_prefix, cfg["attempt"])
        self.state = cfg["stateDir"]
        self.secret_values = []
        self.status_lock = threading.RLock()
        self.ckpt_lock = threading.Lock()
        self.status = dict(self.key, phase="starting", seq=0, heartbeatAt=now_iso(), agentPid=os.getpid())
        self.stop_event = threading.Event()
        self.stop_request = None
        self.threads_stop = threading.Event()
        self.sync_stop = threading.Event()
        self.threads = []
        self.publish_wake = threading.Event()
        self.publisher_running = False
        self.child = None
        self.secrets = {}
        self.tail_from = 0
        self.progress_from = None
        self.storage = self._open_storage()

    # -- paths
    def p(self, name):
        return os.path.join(self.state, name)

    def _open_storage(self):
        url = self.cfg["storage"]
        if url.startswith("file://"):
            return FileStorage(url)
        return S3Storage(url, self.cfg.get("s3EndpointUrl"), self.cfg.get("region"), self.log)

    # -- redaction
    def redact_bytes(self, data):
        for value in self.secret_values:
            data = data.replace(value.encode("utf-8"), b"***")
        return data

    def redact(self, text):
        for value in self.secret_values:
            text = text.replace(value, "***")
        return text

    # -- status
    def set_status(self, publish=True, **fields):
        with self.status_lock:
            for k, v in fields.items():
                if v is None:
                    self.status.pop(k, None)
                else:
                    self.status[k] = v
            if "phase" in fields:
                self.log("phase %s%s" % (fields["phase"], (": " + self.status["message"]) if fields.get("message") else ""))
                self.job_log_note("phase %s" % fields["phase"])
        if publish:
            self.request_publish()

    def request_publish(self):
        """Phase changes are published at once, by the heartbeat thread when it runs (so the
        caller never waits on storage), synchronously otherwise."""
        if self.publisher_running:
            self.publish_wake.set()
        else:
            self.publish_status()

    def publish_status(self):
        """Writes the status; only ever called from one thread at a time, so seq order is write order."""
        with self.status_lock:
            self.status["seq"] += 1
            self.status["heartbeatAt"] = now_iso()
            doc = json.loads(self.redact(json.dumps(self.status)))
        try:
            self.storage.put_bytes(self.attempt_prefix + "status.json", json_bytes(doc))
        except (StorageError, OSError) as e:
            self.log("status write failed: %s" % e)
        return doc

    def refresh_log_view(self):
        """logTail and progress from the end of job.log (setup output while installing)."""
        lines = self.read_tail_lines(self.tail_from)
        fields = {"logTail": lines[-LOG_TAIL_LINES:] if lines else None}
        if self.progress_from is not None:
            for line in reversed(self.read_tail_lines(self.progress_from)):
                m = PROGRESS_RE.search(line)
                if m:
                    progress = {"step": int(m.group(1))}
                    if m.group(2):
                        progress["total"] = int(m.group(2))
                    lm = LOSS_RE.search(line)
                    if lm:
                        try:
                            loss = float(lm.group(1))
                            if loss == loss and loss not in (float("inf"), float("-inf")):
                                progress["loss"] = loss
                        except ValueError:
                            pass
                    fields["progress"] = progress
                    break
        self.set_status(publish=False, **fields)

    def read_tail_lines(self, start):
        try:
            with open(self.p("job.log"), "rb") as f:
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
        lines = text.splitlines()
        if begin > start and lines:
            lines = lines[1:]  # first line is probably cut
        return [ln for ln in lines if not ln.startswith("[runctl-agent]")]

    def job_log_note(self, text):
        try:
            with open(self.p("job.log"), "a") as f:
                f.write("[runctl-agent] %s %s\n" % (now_iso(), text))
        except OSError:
            pass

    # -- log segments
    def ship_logs(self, final=False):
        cursor = read_json(self.p("logs.cursor")) or {"offset": 0, "seq": 0}
        try:
            with open(self.p("job.log"), "rb") as f:
                # Ship only what was there on entry: a job printing faster than one upload takes
                # would otherwise keep this loop (and the status heartbeat behind it) busy forever.
                f.seek(0, os.SEEK_END)
                end = f.tell()
                f.seek(cursor["offset"])
                data = f.read(min(SEGMENT_MAX_BYTES, max(0, end - cursor["offset"])))
                while data:
                    chunk = data
                    if not final and len(data) < SEGMENT_MAX_BYTES:
                        cut = data.rfind(b"\n")
                        if cut < 0:
                            return
                        chunk = data[: cut + 1]
                    seq = cursor["seq"] + 1
                    self.storage.put_bytes(self.attempt_prefix + "logs/%s.log" % pad_seq(seq), self.redact_bytes(chunk))
                    cursor = {"offset": cursor["offset"] + len(chunk), "seq": seq}
                    atomic_write(self.p("logs.cursor"), json_bytes(cursor))
                    f.seek(cursor["offset"])
                    data = f.read(min(SEGMENT_MAX_BYTES, max(0, end - cursor["offset"])))
        except FileNotFoundError:
            return
        except (StorageError, OSError) as e:
            self.log("log segment upload failed: %s" % e)

    # -- background threads
    def start_thread(self, name, target):
        t = threading.Thread(target=self._guarded, args=(name, target), name=name, daemon=True)
        t.start()
        self.threads.append(t)

    def _guarded(self, name, target):
        try:
            target()
        except Exception:
            self.log("thread %s crashed: %s" % (name, traceback.format_exc()))

    def heartbeat_loop(self):
        next_beat = time.monotonic()
        while not self.threads_stop.is_set():
            self.publish_wake.wait(max(0.0, next_beat - time.monotonic()))
            if self.threads_stop.is_set():
                return
            self.publish_wake.clear()
            try:
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + self.cfg["heartbeatSeconds"]
                    self.ship_logs()
                    self.refresh_log_view()
                self.publish_status()
            except Exception as e:
                self.log("heartbeat failed: %s" % e)

    def watch_loop(self):
        imds = Imds(self.cfg["imdsUrl"], self.log)
        control_every = max(self.cfg["noticePollSeconds"], self.cfg["heartbeatSeconds"])
        last_control = 0.0
        rebalance_seen = False
        while not self.threads_stop.is_set():
            notice, rebalance = imds.poll()
            if rebalance and not rebalance_seen:
                rebalance_seen = True
                self.log("rebalance recommendation: %s" % json.dumps(rebalance))
                self.set_status(publish=False, rebalanceRecommendation=rebalance)
            if notice and not self.stop_event.is_set():
                action = notice.get("action", "terminate")
                when = notice.get("time")
                msg = "spot interruption notice: %s%s" % (action, " at " + when if when else "")
                self.request_stop(StopRequest("interrupt", "spot", msg))
            if time.monotonic() - last_control >= control_every:
                last_control = time.monotonic()
                self.check_control()
            self.threads_stop.wait(self.cfg["noticePollSeconds"])

    def check_control(self):
        try:
            raw = self.storage.get_bytes(self.attempt_prefix + "control.json")
        except (StorageError, OSError) as e:
            self.log("control read failed: %s" % e)
            return
        if raw is None or self.stop_event.is_set():
            return
        try:
            doc = json.loads(raw.decode("utf-8"))
        except ValueError:
            self.log("control.json is not valid JSON; ignored")
            return
        if isinstance(doc, dict) and doc.get("action") == "stop":
            reason = str(doc.get("reason") or "unspecified")
            self.request_stop(StopRequest("stop", reason, "stop requested by the controller: %s" % reason))

    def request_stop(self, req):
        if self.stop_event.is_set():
            return
        self.stop_request = req
        self.log(req.message)
        self.stop_event.set()

    def checkpoint_loop(self):
        while not self.sync_stop.wait(self.cfg["syncIntervalSeconds"]):
            try:
                self.sync_checkpoint(final=False)
            except Exception as e:
                self.log("checkpoint sync failed: %s" % e)

    # -- phases
    def run(self):
        result = read_json(self.p("result.json"))
        if result:
            self.log("attempt already ended (%s); re-publishing its final status" % result.get("phase"))
            self.status = result
            self.status["seq"] = max(self.previous_seq(), result.get("seq", 0))
            self.publish_status()
            return 0
        self.status["seq"] = self.previous_seq()
        self.publisher_running = True
        self.start_thread("heartbeat", self.heartbeat_loop)
        self.start_thread("watch", self.watch_loop)

        job = self.launched("job")
        if job:
            return self.adopt(job)

        self.check_control()  # a stop that is already asked for: start nothing
        if self.stopping():
            return self.finish_stopped()
        try:
            self.set_status(phase="syncing")
            self.resolve_secrets()
            self.fetch_bundle()
            if self.stopping():
                return self.finish_stopped()
            self.set_status(phase="restoring")
            resumed = self.restore()
            if self.stopping():
                return self.finish_stopped()
            ended = self.install()
            if ended is not None:
                return ended
            return self.train(resumed)
        except (AgentFailure, StorageError) as e:
            return self.finish("failed", message=str(e))
        except OSError as e:
            return self.finish("failed", message="agent error: %s" % e)

    def previous_seq(self):
        try:
            raw = self.storage.get_bytes(self.attempt_prefix + "status.json")
            if raw:
                return int(json.loads(raw.decode("utf-8")).get("seq", 0))
        except (StorageError, OSError, ValueError, AttributeError):
            pass
        return 0

    def stopping(self):
        return self.stop_event.is_set()

    def resolve_secrets(self):
        resolved = {}
        for name, ref in sorted(self.cfg["secrets"].items()):
            path = ref[len("ssm:"):]
            cmd = ["aws", "ssm", "get-parameter", "--name", path, "--with-decryption", "--query", "Parameter.Value", "--output", "text"]
            if self.cfg.get("region"):
                cmd += ["--region", self.cfg["region"]]
            if self.cfg.get("ssmEndpointUrl"):
                cmd += ["--endpoint-url", self.cfg["ssmEndpointUrl"]]
            err = ""
            for attempt in range(1, 5):
                try:
                    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ, AWS_PAGER=""))
                except FileNotFoundError:
                    raise AgentFailure("cannot resolve secret %s (%s): the AWS CLI (`aws`) is not on PATH" % (name, ref))
                if proc.returncode == 0:
                    resolved[name] = proc.stdout.decode("utf-8").rstrip("\n")
                    break
                err = proc.stderr.decode("utf-8", "replace").strip()[-300:]
                if re.search(r"ParameterNotFound|AccessDenied|Unable to locate credentials|InvalidKeyId", err):
                    break
                time.sleep(0.5 * attempt)
            if name not in resolved:
                raise AgentFailure("cannot resolve secret %s from %s: %s" % (name, ref, err or "unknown error"))
            self.log("resolved secret %s from %s" % (name, ref))
        self.secrets = resolved
        self.secret_values = sorted((v for v in resolved.values() if len(v) >= MIN_REDACTED_SECRET_LENGTH), key=len, reverse=True)

    def fetch_bundle(self):
        key = self.cfg["bundleKey"]
        work = self.cfg["workDir"]
        marker = os.path.join(work, ".runctl-bundle")
        try:
            with open(marker) as f:
                if f.read().strip() == key:
                    self.log("bundle %s already unpacked in %s" % (key, work))
                    return
        except OSError:
            pass
        archive = self.p("bundle.tar.gz")
        self.log("downloading bundle %s" % key)
        try:
            found = self.storage.get_file(key, archive)
        except StorageError as e:
            raise AgentFailure("cannot download code bundle %s: %s" % (key, e))
        if not found:
            raise AgentFailure("code bundle %s not found in %s" % (key, self.cfg["storage"]))
        expected = re.match(r"^bundles/([0-9a-f]{64})\.tar\.gz$", key)
        if expected:
            actual = tar_stream_sha256(archive)
            if actual != expected.group(1):
                raise AgentFailure("code bundle %s is corrupt: its content hashes to %s" % (key, actual))
        parent = os.path.dirname(work.rstrip("/")) or "/"
        os.makedirs(parent, exist_ok=True)
        staging = "%s.unpack-%d" % (work.rstrip("/"), os.getpid())
        remove_quietly(staging)
        os.makedirs(staging)
        try:
            count = safe_extract(archive, staging)
        except (tarfile.TarError, OSError, ValueError) as e:
            remove_quietly(staging)
            raise AgentFailure("cannot unpack code bundle %s: %s" % (key, e))
        with open(os.path.join(staging, ".runctl-bundle"), "w") as f:
            f.write(key + "\n")
        if os.path.lexists(work):
            old = "%s.old-%d" % (work.rstrip("/"), os.getpid())
            os.rename(work, old)
            remove_quietly(old)
        os.rename(staging, work)
        remove_quietly(archive)
        self.log("unpacked %d entries of %s into %s" % (count, key, work))

    def restore(self):
        if not self.cfg["resuming"]:
            self.log("not resuming: no checkpoint restore")
            os.makedirs(self.cfg["checkpointDir"], exist_ok=True)
            self.remember_checkpoint_dir(None)
            return False
        restored = None
        for gen in self.restore_generations():
            restored = self.restore_from(gen)
            if restored is not None:
                break
        if restored is None:
            os.makedirs(self.cfg["checkpointDir"], exist_ok=True)
            self.remember_checkpoint_dir(None)
            self.log("no published checkpoint to restore; the job starts from scratch")
            return False
        return True

    def restore_generations(self):
        gens = [self.cfg["generation"]]
        seed = self.cfg.get("seedGeneration")
        if seed is not None and seed != self.cfg["generation"]:
            gens.append(seed)
        return gens

    def checkpoint_ids(self, generation):
        """(all ids, published ids) in a generation, ascending."""
        prefix = "runs/%s/g%d/checkpoints/" % (self.cfg["run"], generation)
        ids, published = set(), set()
        for k in self.storage.list_keys(prefix):
            head, _, rest = k.partition("/")
            if head.isdigit() and rest:
                ids.add(head)
                if rest == MANIFEST_NAME:
                    published.add(head)
        return prefix, sorted(ids), sorted(published)

    def restore_from(self, generation):
        prefix, _, published = self.checkpoint_ids(generation)
        if not published:
            return None
        newest = published[-1]
        failure = None
        for cid in reversed(published):
            if self.stopping():
                return None
            tmp = self.p("restore")
            remove_quietly(tmp)
            os.makedirs(tmp)
            try:
                manifest, reason = self.download_verified(prefix + cid + "/", tmp)
            except StorageError as e:
                manifest, reason = None, "download failed: %s" % e
            if manifest is None:
                self.log("checkpoint g%d/%s failed verification: %s" % (generation, cid, reason))
                if failure is None:
                    failure = (cid, reason)
                remove_quietly(tmp)
                continue
            target = self.cfg["checkpointDir"]
            os.makedirs(target, exist_ok=True)
            for name in os.listdir(target):
                remove_quietly(os.path.join(target, name))
            for f in manifest["files"]:
                src = os.path.join(tmp, *f["path"].split("/"))
                dest = os.path.join(target, *f["path"].split("/"))
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                os.replace(src, dest)
            remove_quietly(tmp)
            ref = {"id": cid, "files": len(manifest["files"]), "bytes": sum(f["size"] for f in manifest["files"]),
                   "at": manifest.get("createdAt") or now_iso()}
            if isinstance(manifest.get("step"), int):
                ref["step"] = manifest["step"]
            restored_from = {"id": cid}
            if generation != self.cfg["generation"]:
                restored_from["generation"] = generation
            if failure is not None:
                restored_from["fallbackFrom"] = failure[0]
                restored_from["reason"] = failure[1]
            self.log("restored checkpoint g%d/%s (%d files)" % (generation, cid, ref["files"]))
            self.job_log_note("restored checkpoint %s of generation %d%s" % (
                cid, generation, "" if failure is None else " (newest %s failed verification: %s)" % failure))
            # Files restored from a seed generation are not in this generation yet: the first
            # checkpoint this generation publishes carries them along with whatever the job changed.
            self.remember_checkpoint_dir(manifest["files"] if generation == self.cfg["generation"] else None,
                                         ref if generation == self.cfg["generation"] else None)
            self.set_status(restoredFrom=restored_from, lastCheckpoint=ref if generation == self.cfg["generation"] else None)
            return cid
        if failure is not None:
            self.log("no checkpoint of generation %d passed verification (newest %s: %s)" % (generation, newest, failure[1]))
            self.set_status(message="no checkpoint of generation %d passed verification (newest %s: %s); starting from scratch" % (
                generation, newest, failure[1]))
        return None

    def download_verified(self, prefix, dest):
        # One download of the whole checkpoint, manifest included (one AWS CLI call, not two).
        self.storage.get_tree(prefix, dest)
        try:
            with open(os.path.join(dest, MANIFEST_NAME), "rb") as f:
                raw = f.read()
        except OSError:
            return None, "manifest missing"
        try:
            manifest = json.loads(raw.decode("utf-8"))
            files = manifest["files"]
            for f in files:
                if not safe_relpath(f["path"]) or not isinstance(f["size"], int) or not re.match(r"^[0-9a-f]{64}$", f["sha256"]):
                    return None, "manifest lists an invalid entry %r" % (f.get("path"),)
        except (ValueError, KeyError, TypeError, AttributeError):
            return None, "manifest is unreadable"
        for f in files:
            path = os.path.join(dest, *f["path"].split("/"))
            if not os.path.isfile(path):
                return None, "file %s is missing" % f["path"]
            size = os.path.getsize(path)
            if size != f["size"]:
                return None, "file %s has %d bytes, manifest says %d" % (f["path"], size, f["size"])
            if sha256_file(path) != f["sha256"]:
                return None, "file %s fails its sha256 check" % f["path"]
        return manifest, None

    def install(self):
        """None when setup succeeded (or there is none); otherwise the attempt has been finished."""
        setup = self.cfg.get("setup")
        if not setup or not setup.strip():
            return None
        if read_int(self.p("setup.exit")) == 0:
            self.log("setup already completed")
            return None
        self.set_status(phase="installing")
        record = self.launched("setup")
        if record and (process_alive(record["pid"], record.get("startTime")) or os.path.exists(self.p("setup.exit"))):
            child = Child("setup", record["pid"], record.get("startTime"), self.p("setup.exit"))
            self.tail_from = record.get("logOffset", 0)
            self.log("adopting setup (pid %d)" % child.pid)
        else:
            remove_quietly(self.p("setup.exit"))
            child = self.launch("setup", setup, self.p("setup.exit"), self.p("setup.json"))
        self.refresh_log_view()
        self.request_publish()
        code, stopped = self.wait_child(child)
        if stopped:
            return self.finish_stopped()
        if code == 0:
            return None
        if code is None:
            return self.finish("failed", message="setup disappeared without an exit code")
        return self.finish("failed", exitCode=code, message="setup exited with code %d" % code)

    def train(self, resumed):
        self.set_status(phase="training")
        remove_quietly(self.p("job.exit"))
        env_extra = {"RUNCTL_RESUMING": "1" if resumed else "0"}
        self.child = self.launch("job", self.cfg["command"], self.p("job.exit"), self.p("job.json"), env_extra)
        self.progress_from = self.tail_from
        self.set_status(pid=self.child.pid)
        return self.supervise()

    def launched(self, name):
        """The launch record of a child a previous agent started, completed with the pid the
        wrapper wrote if that agent died before recording it; None when nothing was started."""
        record = read_json(self.p(name + ".json"))
        if not record:
            return None
        if record.get("pid"):
            return record
        deadline = time.monotonic() + LAUNCH_TRACE_WAIT_SECONDS
        while time.monotonic() < deadline:
            pid = read_int(self.p(name + ".pid"))
            if pid:
                record.update(pid=pid, pgid=pid, startTime=process_start_time(pid))
                atomic_write(self.p(name + ".json"), json_bytes(record))
                atomic_write(self.p("job.pgid"), ("%d\n" % pid).encode("ascii"))
                self.log("found %s pid %d written by its wrapper after the previous agent died" % (name, pid))
                return record
            time.sleep(0.05)
        self.log("previous agent recorded a %s launch but no process ever started; starting afresh" % name)
        remove_quietly(self.p(name + ".json"))
        return None

    def adopt(self, record):
        exit_path = self.p("job.exit")
        child = Child("job", record["pid"], record.get("startTime"), exit_path)
        self.tail_from = self.progress_from = record.get("logOffset", 0)
        self.secrets = {}
        ck = read_json(self.p("checkpoints.json")) or {}
        if ck.get("lastCheckpoint"):
            self.set_status(publish=False, lastCheckpoint=ck["lastCheckpoint"])
        if record.get("restoredFrom"):
            self.set_status(publish=False, restoredFrom=record["restoredFrom"])
        self.child = child
        self.resolve_secrets_for_redaction()
        if child.running():
            self.log("adopting running job (pid %d, pgid %d)" % (child.pid, child.pgid))
            self.job_log_note("agent restarted; adopted running job pid %d" % child.pid)
        else:
            self.log("job (pid %d) ended while no agent was watching" % child.pid)
        self.set_status(phase="training", pid=child.pid)
        return self.supervise()

    def resolve_secrets_for_redaction(self):
        try:
            self.resolve_secrets()
        except AgentFailure as e:
            self.log("secrets not resolved for redaction after adoption: %s" % e)

    def launch(self, name, command, exit_path, record_path, env_extra=None):
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.update(self.cfg["env"])
        env.update(getattr(self, "secrets", {}))
        env.update({
            "RUNCTL_RUN": self.cfg["run"],
            "RUNCTL_GENERATION": str(self.cfg["generation"]),
            "RUNCTL_ATTEMPT": str(self.cfg["attempt"]),
            "RUNCTL_RESUMING": "0",
            "RUNCTL_CHECKPOINT_DIR": self.cfg["checkpointDir"],
        })
        env.update(env_extra or {})
        log_path = self.p("job.log")
        pid_path = self.p(name + ".pid")
        self.job_log_note("starting %s" % name)
        offset = os.path.getsize(log_path) if os.path.exists(log_path) else 0
        record = {"startedAt": now_iso(), "logOffset": offset}
        if name == "job" and self.status.get("restoredFrom"):
            record["restoredFrom"] = self.status["restoredFrom"]
        remove_quietly(pid_path)
        atomic_write(record_path, json_bytes(record))  # before the start: a launch is never untraced
        log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            popen = subprocess.Popen(
                ["bash", "-c", WRAPPER_SCRIPT, "runctl-" + name, command, exit_path, pid_path],
                cwd=self.cfg["workDir"], env=env, stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd,
                start_new_session=True, close_fds=True,
            )
        finally:
            os.close(log_fd)
        start_time = process_start_time(popen.pid)
        record.update(pid=popen.pid, pgid=popen.pid, startTime=start_time)
        atomic_write(record_path, json_bytes(record))
        atomic_write(self.p("job.pgid"), ("%d\n" % popen.pid).encode("ascii"))
        self.tail_from = offset
        self.log("started %s: pid/pgid %d" % (name, popen.pid))
        return Child(name, popen.pid, start_time, exit_path, popen)

    def wait_child(self, child):
        """Wait for the child to end or a stop request. Returns (exit code or None, stopped?)."""
        while True:
            if self.stop_event.wait(0.1):
                self.stop_child(child)
                return child.exit_code(), True
            if not child.running():
                code = child.exit_code()
                self.reap_stragglers(child)
                return code, False

    def stop_child(self, child):
        req = self.stop_request
        self.set_status(phase="interrupting" if req.kind == "interrupt" else "stopping", message=req.message)
        sig = getattr(signal, self.cfg["signal"])
        if child.running():
            self.log("sending %s to process group %d" % (self.cfg["signal"], child.pgid))
            self.job_log_note("sending %s to the job (%s)" % (self.cfg["signal"], req.message))
            signal_group(child.pgid, sig)
            deadline = time.monotonic() + self.cfg["gracePeriodSeconds"]
            while child.running() and time.monotonic() < deadline:
                time.sleep(0.05)
            if child.running():
                self.log("grace period of %ss over; killing process group %d" % (self.cfg["gracePeriodSeconds"], child.pgid))
                self.job_log_note("grace period over; killing the job")
                signal_group(child.pgid, signal.SIGKILL)
                while child.running():
                    time.sleep(0.05)
        self.reap_stragglers(child)

    def reap_stragglers(self, child):
        if not group_alive(child.pgid):
            return
        self.log("processes of group %d outlived its leader; terminating them" % child.pgid)
        signal_group(child.pgid, signal.SIGTERM)
        deadline = time.monotonic() + STRAGGLER_GRACE_SECONDS
        while group_alive(child.pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        signal_group(child.pgid, signal.SIGKILL)

    def supervise(self):
        self.sync_stop.clear()
        self.start_thread("checkpoint", self.checkpoint_loop)
        code, stopped = self.wait_child(self.child)
        self.sync_stop.set()
        self.join_thread("checkpoint")
        self.final_sync()
        self.refresh_log_view()
        if stopped:
            return self.finish_stopped(exit_code=code)
        if code is None:
            return self.finish("lost", message="the job (pid %d) disappeared without writing an exit code" % self.child.pid)
        if code == 0:
            return self.finish("succeeded", exitCode=0)
        return self.finish("failed", exitCode=code, message="the job exited with code %d" % code)

    def final_sync(self):
        try:
            self.sync_checkpoint(final=True)
        except Exception as e:
            self.log("final checkpoint sync failed: %s" % e)
            self.set_status(publish=False, message="final checkpoint sync failed: %s" % e)

    def join_thread(self, name):
        for t in self.threads:
            if t.name == name:
                t.join()

    def finish_stopped(self, exit_code=None):
        req = self.stop_request
        phase = "interrupted" if req.kind == "interrupt" else "stopped"
        if self.status.get("phase") not in ("interrupting", "stopping"):
            self.set_status(phase="interrupting" if req.kind == "interrupt" else "stopping", message=req.message)
        return self.finish(phase, exitCode=exit_code, message=req.message)

    def finish(self, phase, exitCode=None, message=None):
        """Final logs, final status, result.json; then the pid and marker files go."""
        self.threads_stop.set()
        self.sync_stop.set()
        self.publish_wake.set()
        for t in self.threads:
            t.join()
        self.publisher_running = False
        self.job_log_note("attempt ended: %s%s" % (phase, "" if exitCode is None else " (exit code %d)" % exitCode))
        self.ship_logs(final=True)
        self.refresh_log_view()
        self.log("phase %s%s" % (phase, (": " + message) if message else ""))
        with self.status_lock:
            self.status.update(phase=phase)
            if exitCode is not None:
                self.status["exitCode"] = exitCode
            if message:
                self.status["message"] = message
            final = self.publish_status()
        atomic_write(self.p("result.json"), json_bytes(final))
        for name in ("job.json", "setup.json", "job.pid", "setup.pid", "job.pgid", "job.exit", "setup.exit",
                     "logs.cursor", "checkpoints.json", "restore", "staging"):
            remove_quietly(self.p(name))
        return 0

    # -- checkpoints
    def remember_checkpoint_dir(self, files, ref=None):
        state = {"fingerprint": fingerprint(self.cfg["checkpointDir"]), "files": files or []}
        if ref:
            state["lastCheckpoint"] = ref
        atomic_write(self.p("checkpoints.json"), json_bytes(state))

    def sync_checkpoint(self, final):
        with self.ckpt_lock:
            src = self.cfg["checkpointDir"]
            state = read_json(self.p("checkpoints.json")) or {"fingerprint": [], "files": []}
            before = fingerprint(src)
            if not before or before == state.get("fingerprint"):
                return None
            self.refresh_log_view()  # the manifest records the step the job had reached
            staging = self.p("staging")
            files = None
            for _ in range(3):
                remove_quietly(staging)
                os.makedirs(staging)
                files = snapshot(src, staging)
                after = fingerprint(src)
                if after == before:
                    break
                before = after
                files = None
            if files is None and not final:
                self.log("checkpoint dir kept changing during the snapshot; trying again next interval")
                return None
            if files is None:
                files = snapshot(src, staging)
            if not files:
                return None
            if files == state.get("files"):
                state["fingerprint"] = before
                atomic_write(self.p("checkpoints.json"), json_bytes(state))
                return None
            prefix, ids, published = self.checkpoint_ids(self.cfg["generation"])
            cid = pad_seq((int(ids[-1]) if ids else 0) + 1)
            step = (self.status.get("progress") or {}).get("step")
            manifest = dict(self.key, id=cid, createdAt=now_iso(), files=files)
            if step is not None:
                manifest["step"] = step
            self.storage.put_tree(prefix + cid + "/", staging)
            self.storage.put_bytes(prefix + cid + "/" + MANIFEST_NAME, json_bytes(manifest))
            ref = {"id": cid, "files": len(files), "bytes": sum(f["size"] for f in files), "at": manifest["createdAt"]}
            if step is not None:
                ref["step"] = step
            atomic_write(self.p("checkpoints.json"), json_bytes({"fingerprint": before, "files": files, "lastCheckpoint": ref}))
            remove_quietly(staging)
            self.log("published checkpoint %s (%d files, %d bytes%s)" % (cid, ref["files"], ref["bytes"], "" if step is None else ", step %d" % step))
            self.job_log_note("checkpoint %s published%s" % (cid, "" if step is None else " at step %d" % step))
            self.set_status(publish=False, lastCheckpoint=ref)
            self.apply_retention(prefix, ids + [cid], published + [cid])
            return ref

    def apply_retention(self, prefix, ids, published):
        if len(published) <= self.cfg["keep"]:
            return
        oldest_kept = published[-self.cfg["keep"]]
        for cid in ids:
            if cid >= oldest_kept:
                break
            if cid in published:
                self.storage.delete(prefix + cid + "/" + MANIFEST_NAME)
            self.storage.delete_prefix(prefix + cid + "/")
            self.log("retention: deleted checkpoint %s (keep %d)" % (cid, self.cfg["keep"]))


class AgentFailure(Exception):
    pass


def fingerprint(base):
    out = []
    for rel in list_files(base):
        try:
            st = os.stat(os.path.join(base, *rel.split("/")))
            out.append([rel, st.st_size, st.st_mtime_ns])
        except OSError:
            pass
    return out


def snapshot(src, dest):
    """Copy regular files of src into dest, hashing as it goes; returns manifest file entries."""
    files = []
    for rel in list_files(src):
        if rel == MANIFEST_NAME:
            continue  # reserved for the agent's manifest
        s = os.path.join(src, *rel.split("/"))
        d = os.path.join(dest, *rel.split("/"))
        os.makedirs(os.path.dirname(d), exist_ok=True)
        h = hashlib.sha256()
        size = 0
        try:
            with open(s, "rb") as fin, open(d, "wb") as fout:
                for chunk in iter(lambda: fin.read(1024 * 1024), b""):
                    h.update(chunk)
                    fout.write(chunk)
                    size += len(chunk)
        except FileNotFoundError:
            remove_quietly(d)
            continue
        files.append({"path": rel, "size": size, "sha256": h.hexdigest()})
    return files


def tar_stream_sha256(archive):
    """Bundles are named after the sha256 of their uncompressed tar stream (gzip bytes vary by zlib)."""
    h = hashlib.sha256()
    with gzip.open(archive, "rb") as f:
        for chunk in iter(lambda: f.read(1024 * 1024), b""):
            h.update(chunk)
    return h.hexdigest()


def safe_extract(archive, dest):
    count = 0
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            name = member.name.rstrip("/")
            if name in ("", "."):
                continue
            if name.startswith("./"):
                name = name[2:]
            if not safe_relpath(name):
                raise ValueError("entry %r would land outside the work directory" % member.name)
            target = os.path.join(dest, *name.split("/"))
            if member.isdir():
                os.makedirs(target, exist_ok=True)
            elif member.isfile():
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with tar.extractfile(member) as fin, open(target, "wb") as fout:
                    shutil.copyfileobj(fin, fout)
                os.chmod(target, 0o755 if member.mode & 0o111 else 0o644)
            elif member.issym():
                resolved = os.path.normpath(os.path.join(os.path.dirname(name), member.linkname))
                if os.path.isabs(member.linkname) or resolved == ".." or resolved.startswith("../"):
                    raise ValueError("symlink %r points outside the work directory" % member.name)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.symlink(member.linkname, target)
            else:
                continue  # hard links, devices and fifos have no place in a code bundle
            count += 1
    return count


# ----------------------------------------------------------------------------- entry points

class Lock:
    """flock on stateDir/agent.lock; survives unlink races by re-checking the inode."""

    def __init__(self, path):
        self.path = path
        self.fd = None

    def acquire(self):
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    return False
                raise
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self.fd = fd
                return True
            os.close(fd)

    def release(self):
        if self.fd is not None:
            remove_quietly(self.path)
            os.close(self.fd)
            self.fd = None


def lock_held(path):
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def probe(cfg):
    state = cfg["stateDir"]
    job = read_json(os.path.join(state, "job.json")) or read_json(os.path.join(state, "setup.json")) or {}
    pid = job.get("pid") or read_int(os.path.join(state, "job.pid")) or read_int(os.path.join(state, "setup.pid"))
    result = read_json(os.path.join(state, "result.json"))
    out = {
        "agent": {"alive": lock_held(os.path.join(state, "agent.lock")), "pid": read_int(os.path.join(state, "agent.pid"))},
        "job": {"alive": bool(pid) and process_alive(pid, job.get("startTime")),
                "pid": pid, "pgid": read_int(os.path.join(state, "job.pgid"))},
        "result": result.get("phase") if result else None,
    }
    print(json.dumps(out))
    return 0


class AgentExit(BaseException):
    pass


def install_signal_handlers(log):
    # Handlers (not SIG_IGN) so the job, after exec, gets default dispositions even when the agent
    # was started with some signals ignored (nohup, `cmd &` in a non-interactive shell).
    def leave(signum, _frame):
        log("agent received signal %d; exiting and leaving the job running for a new agent to adopt" % signum)
        raise AgentExit()

    def note(signum, _frame):
        log("agent ignored signal %d" % signum)

    signal.signal(signal.SIGTERM, leave)
    signal.signal(signal.SIGINT, leave)
    for s in (signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(s, note)


def detach(state_dir):
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")
    devnull = os.open(os.devnull, os.O_RDONLY)
    out = os.open(os.path.join(state_dir, "agent.out"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(devnull, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(devnull)
    os.close(out)


def main(argv):
    parser = argparse.ArgumentParser(prog="runctl-agent", description="Supervise one attempt of a runctl training run.")
    parser.add_argument("--config", required=True, help="path of the AgentConfig JSON document")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--detach", action="store_true", help="fork into a new session and return at once")
    mode.add_argument("--probe", action="store_true", help="print whether the agent and job are alive, as JSON")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        sys.stderr.write("runctl-agent: %s\n" % e)
        return 2
    if args.probe:
        return probe(cfg)
    os.makedirs(cfg["stateDir"], exist_ok=True)
    if args.detach:
        detach(cfg["stateDir"])

    holder = {}
    log = AgentLog(os.path.join(cfg["stateDir"], "agent.log"), lambda text: holder["agent"].redact(text) if "agent" in holder else text)
    lock = Lock(os.path.join(cfg["stateDir"], "agent.lock"))
    if not lock.acquire():
        log("another agent holds %s (pid %s); exiting" % (lock.path, read_int(os.path.join(cfg["stateDir"], "agent.pid"))))
        return 0
    pid_path = os.path.join(cfg["stateDir"], "agent.pid")
    try:
        atomic_write(pid_path, ("%d\n" % os.getpid()).encode("ascii"))
        install_signal_handlers(log)
        log("agent starting for %s g%d a%d" % (cfg["run"], cfg["generation"], cfg["attempt"]))
        agent = Agent(cfg, log)
        holder["agent"] = agent
        return agent.run()
    except AgentExit:
        return 0
    except Exception:
        log("agent crashed: %s" % traceback.format_exc())
        return 1
    finally:
        remove_quietly(pid_path)
        lock.release()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
