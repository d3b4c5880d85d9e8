"""Storage backends: a local folder (`file:///abs/dir`) and S3 (`s3://bucket/prefix`, through the
AWS CLI). Keys are relative to the root and use forward slashes (layout: src/agent/layout.ts).

Both expose the same methods: put_bytes(key, data), put_file(key, local), put_tree(prefix, dir),
get_bytes(key) -> bytes or None, get_file(key, dest) -> bool, get_tree(prefix, dir),
list_keys(prefix) -> [relative keys], delete(key), delete_many(keys), delete_prefix(prefix). Errors raise
StorageError with the backend's message; missing objects are None/False, never errors.
"""

import calendar
import json
import os
import random
import re
import shutil
import subprocess
import tempfile
import time
import urllib.parse

from .util import atomic_write, list_files, safe_relpath


class StorageError(Exception):
    """A storage operation failed for good (after retries, or at once for credential/permission errors)."""


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
        """Store every file under local_dir below prefix; a symbolic link to a file is followed,
        as `aws s3 cp --recursive` does (the checkpoint store uploads a folder of such links).
        Returns the paths of links whose file no longer exists, skipped as the CLI skips them."""
        skipped = []
        for name in sorted(os.listdir(local_dir)) if os.path.isdir(local_dir) else []:
            full = os.path.join(local_dir, name)
            if os.path.isfile(full):
                try:
                    self.put_file(prefix + name, full)
                except FileNotFoundError:
                    skipped.append(full)  # deleted since it was listed
            elif os.path.isdir(full) and not os.path.islink(full):
                skipped += self.put_tree(prefix + name + "/", full)
            elif os.path.islink(full) and not os.path.exists(full):
                skipped.append(full)
        return skipped

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

    PROCESS_PER_CALL = False  # a call is a few system calls: one per file costs nothing much

    def get_tree(self, prefix, local_dir, exclude=()):
        """Copy every file under prefix into local_dir, except the relative names in exclude."""
        base = self._path(prefix)
        skip = set(exclude)
        for rel in list_files(base):
            if rel in skip:
                continue
            dest = os.path.join(local_dir, *rel.split("/"))
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            shutil.copyfile(os.path.join(base, *rel.split("/")), dest)

    def list_keys(self, prefix):
        """Keys under prefix (recursive), relative to prefix; temp files of writers excluded."""
        base = self._path(prefix)
        return [k for k in list_files(base) if ".tmp-" not in k.rsplit("/", 1)[-1]]

    def list_objects(self, prefix, include_temp=False):
        """[(key relative to prefix, size in bytes, modification time as epoch seconds)], recursive.
        Writers' temp files are left out unless include_temp (retention removes stale ones)."""
        base = self._path(prefix)
        out = []
        for rel in list_files(base):
            if not include_temp and ".tmp-" in rel.rsplit("/", 1)[-1]:
                continue
            try:
                st = os.stat(os.path.join(base, *rel.split("/")))
            except FileNotFoundError:
                continue
            out.append((rel, st.st_size, st.st_mtime))
        return out

    def list_dirs(self, prefix):
        """Names of the immediate sub-folders of prefix (what S3 calls common prefixes)."""
        base = self._path(prefix)
        try:
            return sorted(n for n in os.listdir(base) if os.path.isdir(os.path.join(base, n)))
        except FileNotFoundError:
            return []

    def local_path(self, key):
        """The file a key is stored in (the checkpoint store copies straight into the folder)."""
        return self._path(key)

    def delete(self, key):
        try:
            os.unlink(self._path(key))
        except FileNotFoundError:
            pass

    def delete_many(self, keys):
        """Delete every key of keys (a missing one is not an error)."""
        for key in keys:
            self.delete(key)

    def delete_prefix(self, prefix):
        shutil.rmtree(self._path(prefix), ignore_errors=True)


# What no retry fixes. "Unable to locate credentials" is NOT here: on EC2 every `aws` call fetches the
# instance profile's credentials from the metadata service, and that fetch fails now and then
# (throttled IMDS, a rotation); it is retried with backoff like a network error (issue 11, fault 4).
TERMINAL_CLI_ERRORS = re.compile(r"AccessDenied|\(403\)|NoSuchBucket|InvalidAccessKeyId|SignatureDoesNotMatch")
# What `aws s3 cp --recursive` prints for a local file gone since it listed the folder (a link to
# a file the job deleted); it exits 2 then, having transferred every other file.
SKIPPED_MISSING = re.compile(r"^warning: Skipping file (.+)\. File does not exist\.$")


class S3Storage:
    """Storage in S3 through the AWS CLI, with bounded retries."""

    ATTEMPTS = 5
    PROCESS_PER_CALL = True  # every call starts the AWS CLI: about a second of CPU (checkpoint_restore)

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

    def _aws(self, args, stdin_data=None, missing_ok=False, empty_ok=False, skipped_ok=False):
        """Run the AWS CLI with bounded retries; returns its stdout (bytes), None for a missing
        key (missing_ok), or, with skipped_ok, the list of local paths it skipped as missing.
        Raises StorageError: at once for a terminal error, after ATTEMPTS for any other."""
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
            if skipped_ok and proc.returncode == 2:
                # "At least one or more files marked for transfer were skipped during the transfer
                # process. However, all other files marked for transfer were successfully
                # transferred." (AWS CLI, return codes.) Not retried: the file is gone.
                lines = [line.strip() for line in err.splitlines() if line.strip()]
                skipped = [m.group(1) for m in (SKIPPED_MISSING.match(line) for line in lines) if m]
                if lines and len(skipped) == len(lines):
                    return skipped
            if missing_ok and re.search(r"\(404\)|Not Found|NoSuchKey|does not exist", err):
                return None
            if TERMINAL_CLI_ERRORS.search(err):
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
        """Upload every file under local_dir below prefix with one `aws s3 cp --recursive` (links
        followed). Returns the local paths skipped because they no longer exist (a link to a file
        deleted meanwhile); every other file is uploaded. Raises StorageError."""
        out = self._aws(["s3", "cp", "--only-show-errors", "--recursive", local_dir, self._url(prefix)], skipped_ok=True)
        return out if isinstance(out, list) else []

    def get_bytes(self, key):
        return self._aws(["s3", "cp", "--only-show-errors", self._url(key), "-"], missing_ok=True)

    def get_file(self, key, dest):
        return self._aws(["s3", "cp", "--only-show-errors", self._url(key), dest], missing_ok=True) is not None

    def get_tree(self, prefix, local_dir, exclude=()):
        """Download every object under prefix into local_dir with one `aws s3 cp --recursive`
        (the CLI fetches them on its own threads), except the relative names in exclude (one
        `--exclude` each: the CLI matches every object against every filter, so keep it short)."""
        filters = []
        for name in exclude:
            filters += ["--exclude", name]
        self._aws(["s3", "cp", "--only-show-errors", "--recursive", self._url(prefix), local_dir] + filters)

    def list_keys(self, prefix):
        out = self._aws(["s3", "ls", "--recursive", self._url(prefix)], empty_ok=True)
        full_prefix = (self.prefix + "/" if self.prefix else "") + prefix
        keys = []
        for line in out.decode("utf-8", "replace").splitlines():
            parts = line.split(None, 3)
            if len(parts) == 4 and parts[3].startswith(full_prefix):
                keys.append(parts[3][len(full_prefix):])
        return keys

    def list_objects(self, prefix, include_temp=False):
        """[(key relative to prefix, size in bytes, LastModified as epoch seconds)], recursive:
        one `aws s3api list-objects-v2` (the CLI follows the pages itself)."""
        full_prefix = (self.prefix + "/" if self.prefix else "") + prefix
        out = self._aws(["s3api", "list-objects-v2", "--bucket", self.bucket, "--prefix", full_prefix,
                         "--output", "json", "--query", "Contents[].[Key,Size,LastModified]"])
        rows = json.loads(out.decode("utf-8") or "null") or []
        result = []
        for row in rows:
            if not row or len(row) != 3 or not row[0].startswith(full_prefix):
                continue
            result.append((row[0][len(full_prefix):], int(row[1]), parse_s3_time(row[2])))
        return result

    def list_dirs(self, prefix):
        """Names of the immediate sub-folders (common prefixes) of prefix: one `aws s3 ls`."""
        out = self._aws(["s3", "ls", self._url(prefix)], empty_ok=True)
        names = []
        for line in out.decode("utf-8", "replace").splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == "PRE" and parts[1].endswith("/"):
                names.append(parts[1][:-1])
        return sorted(names)

    def delete(self, key):
        self._aws(["s3", "rm", "--only-show-errors", self._url(key)])

    # Per-key errors of a DeleteObjects answer that a later try fixes (S3 error codes, "Error
    # Responses" in the Amazon S3 API Reference); any other code is terminal.
    RETRYABLE_DELETE_CODES = ("InternalError", "SlowDown", "ServiceUnavailable", "RequestTimeout", "OperationAborted")

    def delete_many(self, keys):
        """Delete keys with `aws s3api delete-objects`, 1,000 keys per call (the API's limit), so
        retention costs one AWS CLI process instead of one per key. DeleteObjects answers 200 with
        per-key errors: retryable codes are tried again (bounded, with the CLI's own retries),
        others raise StorageError naming the key and the code."""
        keys = list(keys)
        for start in range(0, len(keys), 1000):
            pending = keys[start:start + 1000]
            for attempt in range(1, self.ATTEMPTS + 1):
                # In a file: 1,000 keys can exceed what one command-line argument may hold (128 KiB).
                with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="runctl-delete-", delete=False) as f:
                    json.dump({"Objects": [{"Key": self._full_key(k)} for k in pending], "Quiet": True}, f)
                try:
                    out = self._aws(["s3api", "delete-objects", "--bucket", self.bucket, "--delete", "file://" + f.name, "--output", "json"])
                finally:
                    os.unlink(f.name)
                errors = (json.loads(out.decode("utf-8") or "null") or {}).get("Errors") or []
                retry = [e for e in errors if e.get("Code") in self.RETRYABLE_DELETE_CODES]
                fatal = [e for e in errors if e.get("Code") not in self.RETRYABLE_DELETE_CODES]
                if fatal:
                    raise StorageError("aws s3api delete-objects could not delete %s: %s %s" % (
                        fatal[0].get("Key"), fatal[0].get("Code"), fatal[0].get("Message") or ""))
                if not retry:
                    break
                if attempt == self.ATTEMPTS:
                    raise StorageError("aws s3api delete-objects could not delete %s after %d attempts: %s" % (
                        retry[0].get("Key"), attempt, retry[0].get("Code")))
                strip = len(self._full_key(""))
                pending = [e["Key"][strip:] for e in retry]
                time.sleep(0.5 * attempt)

    def _full_key(self, key):
        return (self.prefix + "/" if self.prefix else "") + key

    def delete_prefix(self, prefix):
        self._aws(["s3", "rm", "--only-show-errors", "--recursive", self._url(prefix)])

def parse_s3_time(text):
    """Epoch seconds of an S3 LastModified such as 2026-01-01T12:00:05.000Z or ...+00:00."""
    m = re.match(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(\.\d+)?(Z|[+-]\d\d:?\d\d)?$", str(text))
    if not m:
        raise StorageError("unexpected LastModified %r from the AWS CLI" % (text,))
    secs = calendar.timegm(tuple(int(m.group(i)) for i in range(1, 7)) + (0, 0, 0)) + float(m.group(7) or 0)
    tz = m.group(8)
    if tz and tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        digits = tz[1:].replace(":", "")
        secs -= sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    return secs


def open_storage(cfg, log):
    """The backend for cfg["storage"] (with cfg's s3EndpointUrl and region for s3://)."""
    url = cfg["storage"]
    if url.startswith("file://"):
        return FileStorage(url)
    return S3Storage(url, cfg.get("s3EndpointUrl"), cfg.get("region"), log)
