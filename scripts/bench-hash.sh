#!/usr/bin/env bash
# Compares the `hash` example with b3sum, openssl and sha256sum on the same
# files (generated with a fixed seed), checks that the digests agree, and
# prints one `RATIO name value` line per goal of the hashing issue.
#
#   scripts/bench-hash.sh            # 5 alternating runs per pair, medians
#   RUNS=9 scripts/bench-hash.sh     # more runs
#   BENCH_DATA=/path scripts/bench-hash.sh   # where the ~3.3 GB of data go
#   HASH_BIN=/path/to/hash scripts/bench-hash.sh   # time another build of
#                                    # the example (nothing is built then)
#
# The example is built into $CARGO_TARGET_DIR (default `target/`).
set -euo pipefail
cd "$(dirname "$0")/.."
export BENCH_DATA=${BENCH_DATA:-target/bench-hash-data}
export RUNS=${RUNS:-5}
if [ -z "${HASH_BIN:-}" ]; then
    cargo build --release --example hash --quiet
    export HASH_BIN="${CARGO_TARGET_DIR:-target}/release/examples/hash"
fi
command -v b3sum >/dev/null || cargo install b3sum --locked --quiet
command -v openssl >/dev/null || { echo "openssl is needed" >&2; exit 1; }
exec python3 scripts/bench_hash.py
