#!/usr/bin/env bash
# Runs the `normalize` example and Python's `publicsuffixlist` on the same
# 1,000,000 generated host names (fixed seeds) of two corpora — common
# suffixes, and hosts made from every rule of the embedded list (see
# scripts/bench_domain.py) — compares the registrable domains (counting and
# showing every difference by cause), and prints `RATIO` lines: inputs per
# second of ours over Python's, one core each, median of 5 alternating runs
# with the run-by-run spread.
#
#   scripts/bench-domain.sh
#   RUNS=9 N=2000000 scripts/bench-domain.sh
#   CORPUS=broad scripts/bench-domain.sh
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
