"""`ssm:` secrets: resolved on the instance with the AWS CLI, given to the job through its
environment only, and redacted (values of MIN_REDACTED_SECRET_LENGTH+ characters) everywhere the
agent writes."""

import os
import re
import subprocess
import time

from .errors import AgentFailure

MIN_REDACTED_SECRET_LENGTH = 4


def resolve_secrets(cfg, log):
    """{variable: value} for cfg["secrets"] ({variable: "ssm:/path"}), through
    `aws ssm get-parameter --with-decryption` (cfg's region and ssmEndpointUrl), retried up to 4
    times unless the error is terminal. Raises AgentFailure naming the variable and path, never a value."""
    resolved = {}
    for name, ref in sorted(cfg["secrets"].items()):
        path = ref[len("ssm:"):]
        cmd = ["aws", "ssm", "get-parameter", "--name", path, "--with-decryption", "--query", "Parameter.Value", "--output", "text"]
        if cfg.get("region"):
            cmd += ["--region", cfg["region"]]
        if cfg.get("ssmEndpointUrl"):
            cmd += ["--endpoint-url", cfg["ssmEndpointUrl"]]
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
            # A credential fetch from the metadata service can fail transiently: retried (issue 11, fault 4).
            if re.search(r"ParameterNotFound|AccessDenied|InvalidKeyId", err):
                break
            time.sleep(0.5 * attempt)
        if name not in resolved:
            raise AgentFailure("cannot resolve secret %s from %s: %s" % (name, ref, err or "unknown error"))
        log("resolved secret %s from %s" % (name, ref))
    return resolved


def redaction_values(secrets):
    """The values to hide, longest first (so a value containing another is replaced whole)."""
    return sorted((v for v in secrets.values() if len(v) >= MIN_REDACTED_SECRET_LENGTH), key=len, reverse=True)
