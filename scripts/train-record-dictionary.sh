#!/usr/bin/env bash
# How crates/store/data/records-1.zdict was made: the zstd dictionary row
# format 3 compresses record payloads with. Writes a NEW dictionary to the
# path given (default: target/records-new.zdict); it never replaces
# records-1, which rows on disk depend on: a new dictionary needs a new
# format code (crates/store/src/codec.rs, docs/STORAGE.md).
# Needs the zstd command (Debian: apt-get install zstd).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/records-new.zdict}
samples=$(mktemp -d)
trap 'rm -rf "$samples"' EXIT
cargo run --release --locked -q -p privtel-store --example record-samples -- "$samples" 200
zstd -q --train -r "$samples" -o "$out" --maxdict=16384
ls -l "$out"
