#!/usr/bin/env python3
"""Install hash-pinned pure-Python wheels into a virtual environment without pip.

The fallback of setup.sh for machines whose python3 has no pip (e.g. a minimal Amazon Linux):
reads `name==version --hash=sha256:...` lines, finds each wheel in the wheelhouse, refuses any
whose sha256 differs from the pin, and unpacks it into the environment's site-packages.

    python3 tools/install_wheels.py --python .venv/bin/python --find-links wheelhouse -r requirements.txt
"""
import argparse
import hashlib
import os
import re
import subprocess
import sys
import zipfile

LINE = re.compile(r"^([A-Za-z0-9_.-]+)==([A-Za-z0-9_.+-]+)\s+--hash=sha256:([0-9a-f]{64})\s*$")


def requirements(path):
    out = []
    with open(path) as f:
        for number, raw in enumerate(f, 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            match = LINE.match(line)
            if not match:
                sys.exit("%s:%d: expected 'name==version --hash=sha256:<64 hex>', got %r" % (path, number, line))
            out.append(match.groups())
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--python", required=True)
    parser.add_argument("--find-links", required=True)
    parser.add_argument("-r", "--requirement", required=True)
    args = parser.parse_args()
    purelib = subprocess.check_output([args.python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).decode().strip()
    for name, version, pinned in requirements(args.requirement):
        wheel = os.path.join(args.find_links, "%s-%s-py3-none-any.whl" % (name.replace("-", "_"), version))
        print("Processing %s" % wheel, flush=True)
        with open(wheel, "rb") as f:
            actual = hashlib.sha256(f.read()).hexdigest()
        if actual != pinned:
            sys.exit("hash mismatch for %s: requirements pin %s, wheel has %s" % (wheel, pinned, actual))
        with zipfile.ZipFile(wheel) as zf:
            for member in zf.namelist():
                if member.startswith("/") or ".." in member.split("/"):
                    sys.exit("%s contains an unsafe path %r" % (wheel, member))
            zf.extractall(purelib)
        with open(os.path.join(purelib, "%s-%s.dist-info" % (name, version), "INSTALLER"), "w") as f:
            f.write("tiny-trainer install_wheels\n")
        print("Successfully installed %s-%s" % (name, version), flush=True)


if __name__ == "__main__":
    main()
