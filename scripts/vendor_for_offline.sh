#!/usr/bin/env bash
# Pack the loglm sources with every Rust dependency vendored, for a GPU machine
# that cannot reach crates.io (run this on a machine that can). Not run in CI.
#
# Usage: scripts/vendor_for_offline.sh [OUT.tar.gz]   (default /tmp/loglm-offline.tar.gz)
#
# On the GPU machine (CUDA toolkit with nvcc on the PATH, a Rust toolchain, Python >= 3.9
# with numpy and pandas; the tarball carries maturin's wheel):
#   tar xzf loglm-offline.tar.gz && cd loglm-offline
#   cargo build --release --features cuda                      # the Rust core alone
#   pip install --no-index --find-links wheels/ maturin
#   maturin build --release --features cuda && pip install --no-deps target/wheels/loglm-*.whl
# The vendored sources and `[net] offline = true` live in .cargo/config.toml, so cargo
# (and maturin, which calls it) never goes online. Set CUDA_COMPUTE_CAP (80 = A100,
# 90 = H100) when the build cannot query the GPU.
set -euo pipefail

out="${1:-/tmp/loglm-offline.tar.gz}"
here="$(cd "$(dirname "$0")/.." && pwd)"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
dest="$stage/loglm-offline"

# The tracked sources only (no build outputs, no local virtual environments).
mkdir -p "$dest"
git -C "$here" archive --format=tar HEAD | tar -x -C "$dest"

# Every crate of Cargo.lock, for every platform cargo might build for
# (candle-kernels, cudarc and cudaforge included, whatever features are on).
(cd "$dest" && cargo vendor --locked --versioned-dirs vendor > vendor-config.toml)

# Point cargo at the vendored copies; keep the project's own settings.
mkdir -p "$dest/.cargo"
{
    echo
    echo "# Added by scripts/vendor_for_offline.sh: build from vendor/ without a network."
    cat "$dest/vendor-config.toml"
    echo
    echo "[net]"
    echo "offline = true"
} >> "$dest/.cargo/config.toml"
rm "$dest/vendor-config.toml"

# Python build tool for `pip install` without PyPI (optional: skipped when pip cannot download).
mkdir -p "$dest/wheels"
python3 -m pip download --quiet --dest "$dest/wheels" "maturin>=1.5,<2" || echo "note: maturin wheel not downloaded"

tar -C "$stage" -czf "$out" loglm-offline
echo "wrote $out ($(du -h "$out" | cut -f1))"
