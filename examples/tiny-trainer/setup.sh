#!/usr/bin/env bash
# The installing phase of the tiny trainer: a real, offline install into a virtual environment.
# 1. create .venv, 2. build the vendored tinymath wheel, 3. install requirements.txt with pip
# (--no-index, hash-checked), or with tools/install_wheels.py where python3 has no pip,
# 4. check the import. Running it again on an installed .venv only re-checks it.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP="$VENV/.tiny-trainer-installed"
want=$(cat requirements.txt vendor/tinymath/pyproject.toml vendor/tinymath/tinymath/*.py | "$PYTHON" -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && "$VENV/bin/python" -c 'import tinymath' 2>/dev/null; then
  echo "[setup] requirements already satisfied in $VENV"
  exit 0
fi

echo "[setup 1/4] creating virtual environment $VENV ($("$PYTHON" --version 2>&1))"
rm -rf "$VENV"
"$PYTHON" -m venv --without-pip "$VENV"

echo "[setup 2/4] building wheel from vendor/tinymath"
"$PYTHON" tools/build_wheel.py vendor/tinymath wheelhouse

# pip >= 22.3 can install into another interpreter (--python); older or absent pip: the fallback.
pip_ok=$("$PYTHON" -c 'import pip; print(int(tuple(int(x) for x in pip.__version__.split(".")[:2]) >= (22, 3)))' 2>/dev/null || echo 0)
if [ "${TINY_TRAINER_INSTALLER:-auto}" != stdlib ] && [ "$pip_ok" = 1 ]; then
  echo "[setup 3/4] installing requirements.txt with pip (offline: --no-index, --require-hashes)"
  "$PYTHON" -m pip --python "$VENV/bin/python" install --disable-pip-version-check --no-input \
    --no-index --find-links wheelhouse --require-hashes -r requirements.txt
else
  echo "[setup 3/4] installing requirements.txt with tools/install_wheels.py (no pip here; hash-checked)"
  "$PYTHON" tools/install_wheels.py --python "$VENV/bin/python" --find-links wheelhouse -r requirements.txt
fi

echo "[setup 4/4] checking the installation"
"$VENV/bin/python" -c 'import tinymath; print("[setup] tinymath", tinymath.__version__, "importable from", tinymath.__file__)'
echo "$want" > "$STAMP"
echo "[setup] done"
