#!/usr/bin/env bash
# Runs the `normalize` example and Python's `publicsuffixlist` on the same
# 1,000,000 generated bare host names (fixed seed), checks that the
# registrable domains agree, and prints `RATIO` lines: inputs per second of
# ours over Python's, one core each, median of 5 alternating runs.
#
#   scripts/bench-domain.sh
#   RUNS=9 N=2000000 scripts/bench-domain.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export RUNS=${RUNS:-5} N=${N:-1000000}
export BENCH_DATA=${BENCH_DATA:-target/bench-domain-data}
mkdir -p "$BENCH_DATA"
cargo build --release --example normalize --quiet
if [ ! -x "$BENCH_DATA/venv/bin/python" ]; then
    python3 -m venv "$BENCH_DATA/venv"
    "$BENCH_DATA/venv/bin/pip" install --quiet publicsuffixlist
fi
exec "$BENCH_DATA/venv/bin/python" scripts/bench_domain.py
