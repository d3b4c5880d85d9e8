"""Loading AgentConfig (src/agent/config-types.ts) with a specific error per bad field."""

import json
import os
import re

from .util import safe_relpath

SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR1", "SIGUSR2", "SIGHUP", "SIGQUIT")


class ConfigError(Exception):
    """The config file is missing, not JSON, or has a bad field; the message names file and field."""


def load_config(path):
    """The validated config document at path, as a dict. Raises ConfigError."""
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
    if cfg.get("setupCache") is not None:
        def cache_ok(v):
            return (set(v) <= {"paths", "key"} and all(
                isinstance(v.get(f), list) and v[f] and all(isinstance(p, str) and safe_relpath("/".join(x for x in p.split("/") if x not in ("", "."))) for p in v[f])
                for f in ("paths", "key")))
        need("setupCache", dict, cache_ok, "{paths: [...], key: [...]}: non-empty lists of paths relative to workDir")
        if not cfg.get("setup"):
            raise ConfigError("config %s: field 'setupCache' needs a 'setup' command" % path)
    need("command", str, lambda v: bool(v.strip()), "a non-empty shell command")
    need("env", dict, lambda v: all(isinstance(k, str) and isinstance(x, str) for k, x in v.items()), "an object of string values")
    need("secrets", dict, lambda v: all(re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", k) and isinstance(x, str) and re.match(r"^ssm:/?[A-Za-z0-9_.\-/]+$", x)
                                        for k, x in v.items()), "an object mapping environment variable names to 'ssm:/parameter/path' references")
    need("syncIntervalSeconds", (int, float), positive, "a positive number")
    need("keep", int, lambda v: v >= 1, "an integer >= 1")
    need("signal", str, lambda v: v in SIGNALS, "one of " + ", ".join(SIGNALS))
    if cfg.get("signalScope") is not None:
        need("signalScope", str, lambda v: v in ("main", "group"), "main or group")
    need("gracePeriodSeconds", (int, float), lambda v: v >= 0, "a non-negative number")
    need("imdsUrl", str, lambda v: v.startswith("http://") or v.startswith("https://"), "an http:// URL")
    need("heartbeatSeconds", (int, float), positive, "a positive number")
    need("noticePollSeconds", (int, float), positive, "a positive number")
    if cfg.get("stallSeconds") is not None:
        need("stallSeconds", (int, float), positive, "a positive number")
    optional("s3EndpointUrl", str, "a URL")
    optional("ssmEndpointUrl", str, "a URL")
    optional("region", str, "a region name")
    if cfg.get("contentGraceSeconds") is not None:
        need("contentGraceSeconds", (int, float), lambda v: v >= 0 and not isinstance(v, bool), "a non-negative number of seconds")
    if cfg.get("seedGeneration") is not None:
        need("seedGeneration", int, lambda v: v >= 0, "a non-negative integer")
    optional("uid", str, "a run uid")
    if cfg.get("progressPattern") is not None:
        need("progressPattern", str, _compiles, "a Python regular expression (spec.progress.pattern as runctl translated it)")
    if cfg.get("uid") is not None and not re.match(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", cfg["uid"]):
        raise ConfigError("config %s: field 'uid' must be a run uid (a lowercase UUID), got %s" % (path, json.dumps(cfg["uid"])))
    return cfg


def _compiles(pattern):
    try:
        re.compile(pattern, re.ASCII)
        return True
    except re.error:
        return False


def run_prefix(cfg):
    """Storage prefix of the run incarnation: runs/<run>/<uid>, or runs/<run> for a run recorded
    before uids (src/agent/layout.ts keeps the same rule on the controller side)."""
    if cfg.get("uid"):
        return "runs/%s/%s" % (cfg["run"], cfg["uid"])
    return "runs/%s" % cfg["run"]
