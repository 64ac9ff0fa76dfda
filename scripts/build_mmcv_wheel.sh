#!/usr/bin/env bash
# Build mmcv (with its C++ ops, CPU only) as a wheel into WHEEL_DIR (the Makefile's per-user
# wheel cache), for `pip install --find-links WHEEL_DIR`.
#
# Why: mmdet 3.3.0 requires mmcv>=2.0.0rc4,<2.2.0 and PyPI has those versions only as source,
# so pip would compile mmcv on every install. We compile it once per machine and keep the wheel.
# Two changes make mmcv 2.1.0 build against our torch:
#   - setuptools < 81 at build time: mmcv's setup.py imports pkg_resources, removed in 81;
#   - C++20 instead of C++17: torch's recent headers need it.
# Usage: scripts/build_mmcv_wheel.sh [PYTHON [WHEEL_DIR]]   (PYTHON defaults to .venv/bin/python;
# it must already have torch installed, since the extension is compiled against it. WHEEL_DIR
# defaults to .whl/ in the checkout.) The wheel lands there only once complete.
set -euo pipefail

MMCV_VERSION=2.1.0
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${1:-$ROOT/.venv/bin/python}
WHEEL_DIR=${2:-$ROOT/.whl}
JOBS=${MAX_JOBS:-2}

if ls "$WHEEL_DIR"/mmcv-"$MMCV_VERSION"-*.whl >/dev/null 2>&1; then
    echo "mmcv $MMCV_VERSION wheel already in $WHEEL_DIR"
    exit 0
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# Build tools go to a private folder on PYTHONPATH, so the project's venv keeps its setuptools.
"$PYTHON" -m pip install --quiet --target "$WORK/tools" "setuptools<81" ninja
# pip prepares metadata even to download, which runs setup.py: give it the same tools.
PYTHONPATH="$WORK/tools" "$PYTHON" -m pip download --quiet --no-deps --no-build-isolation \
    --no-binary :all: "mmcv==$MMCV_VERSION" -d "$WORK"
tar -xzf "$WORK/mmcv-$MMCV_VERSION.tar.gz" -C "$WORK"
SRC=$WORK/mmcv-$MMCV_VERSION
grep -q -- "-std=c++17" "$SRC/setup.py" || { echo "mmcv setup.py has no -std=c++17 flag" >&2; exit 1; }
sed -i 's/-std=c++17/-std=c++20/g' "$SRC/setup.py"

mkdir -p "$WHEEL_DIR" "$WORK/wheel"
start=$(date +%s)
PATH="$WORK/tools/bin:$PATH" PYTHONPATH="$WORK/tools" MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=$JOBS \
    nice -n 19 "$PYTHON" -m pip wheel --no-build-isolation --no-deps -w "$WORK/wheel" "$SRC"
# Copy beside, then rename: an interrupted build never leaves a partial wheel in the cache.
for wheel in "$WORK"/wheel/mmcv-*.whl; do
    cp "$wheel" "$WHEEL_DIR/.$(basename "$wheel").tmp"
    mv "$WHEEL_DIR/.$(basename "$wheel").tmp" "$WHEEL_DIR/$(basename "$wheel")"
done
echo "built mmcv $MMCV_VERSION in $(( $(date +%s) - start )) s with MAX_JOBS=$JOBS"
