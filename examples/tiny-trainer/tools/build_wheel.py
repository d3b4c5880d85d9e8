#!/usr/bin/env python3
"""Build a pure-Python wheel from vendor/<name>/ with the standard library only.

The wheel is byte-for-byte reproducible (sorted entries, fixed timestamps and permissions, no
compression), so requirements.txt can pin its sha256 and pip can check it with --require-hashes.

    python3 tools/build_wheel.py vendor/tinymath wheelhouse/
"""
import base64
import hashlib
import os
import re
import sys
import zipfile

FIXED_DATE = (1980, 1, 1, 0, 0, 0)


def project_field(pyproject, field):
    match = re.search(r'^%s\s*=\s*"([^"]+)"' % field, pyproject, re.M)
    if not match:
        sys.exit("build_wheel: %s has no %s" % ("pyproject.toml", field))
    return match.group(1)


def record_hash(data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode("ascii")
    return "sha256=" + digest


def main(src, out_dir):
    with open(os.path.join(src, "pyproject.toml")) as f:
        pyproject = f.read()
    name = project_field(pyproject, "name")
    version = project_field(pyproject, "version")
    summary = project_field(pyproject, "description")
    dist_info = "%s-%s.dist-info" % (name, version)
    files = {}
    package_dir = os.path.join(src, name)
    for dirpath, dirnames, filenames in os.walk(package_dir):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for filename in sorted(filenames):
            if filename.endswith(".pyc"):
                continue
            path = os.path.join(dirpath, filename)
            with open(path, "rb") as f:
                files[os.path.relpath(path, src).replace(os.sep, "/")] = f.read()
    files[dist_info + "/METADATA"] = ("Metadata-Version: 2.1\nName: %s\nVersion: %s\nSummary: %s\n" % (name, version, summary)).encode()
    files[dist_info + "/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: tiny-trainer build_wheel\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = "".join("%s,%s,%d\n" % (path, record_hash(data), len(data)) for path, data in sorted(files.items()))
    files[dist_info + "/RECORD"] = (record + dist_info + "/RECORD,,\n").encode()

    os.makedirs(out_dir, exist_ok=True)
    wheel = os.path.join(out_dir, "%s-%s-py3-none-any.whl" % (name, version))
    tmp = wheel + ".tmp"
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(files):
            info = zipfile.ZipInfo(path, FIXED_DATE)
            info.external_attr = 0o644 << 16
            info.create_system = 3
            zf.writestr(info, files[path])
    os.replace(tmp, wheel)
    with open(wheel, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    print("built %s (%d files, sha256 %s)" % (os.path.basename(wheel), len(files), sha))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: build_wheel.py SOURCE_DIR OUT_DIR")
    main(sys.argv[1], sys.argv[2])
