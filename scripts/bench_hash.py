"""Driver of scripts/bench-hash.sh: data generation, agreement checks, timing."""

import os
import random
import statistics
import subprocess
import sys
import time

DATA = os.environ["BENCH_DATA"]
RUNS = int(os.environ.get("RUNS", "5"))
HASH = os.environ.get("HASH_BIN", "target/release/examples/hash")
SEED = 20261127
BIG = os.path.join(DATA, "big.bin")
TREE = os.path.join(DATA, "tree")
SMALL = os.path.join(DATA, "small")


def sh(cmd):
    return subprocess.run(cmd, shell=True, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE).stdout


def generate():
    os.makedirs(DATA, exist_ok=True)
    rng = random.Random(SEED)
    pool = rng.randbytes(8 << 20)
    if not os.path.exists(BIG) or os.path.getsize(BIG) != 1 << 30:
        with open(BIG, "wb") as f:
            for i in range(128):
                f.write(bytes([i]) + pool[1:])
    marker = os.path.join(DATA, f".done-{SEED}")
    if os.path.exists(marker):
        return
    # ~20,000 files, 1 KiB to 2 MiB, about 2 GiB: three quarters small
    # (1-16 KiB), one quarter large (16 KiB - 2 MiB), log-uniform in each.
    for i in range(20_000):
        lo, hi = (1 << 10, 16 << 10) if rng.random() < 0.75 else (16 << 10, 2 << 20)
        size = int(round(2 ** rng.uniform(lo.bit_length() - 1, hi.bit_length() - 1)))
        d = os.path.join(TREE, f"d{i % 100:02d}")
        os.makedirs(d, exist_ok=True)
        off = rng.randrange(0, len(pool) - size)
        with open(os.path.join(d, f"f{i:05d}.bin"), "wb") as f:
            f.write(i.to_bytes(4, "little") + pool[off + 4 : off + size])
    # ~10,000 files under 4 KiB.
    for i in range(10_000):
        size = rng.randrange(64, 4096)
        d = os.path.join(SMALL, f"d{i % 50:02d}")
        os.makedirs(d, exist_ok=True)
        off = rng.randrange(0, len(pool) - size)
        with open(os.path.join(d, f"s{i:05d}"), "wb") as f:
            f.write(i.to_bytes(4, "little") + pool[off + 4 : off + size])
    open(marker, "w").close()


def tree_bytes(root):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs)


def tree_files(root):
    return sum(len(fs) for _, _, fs in os.walk(root))


def warm(path):
    if os.path.isdir(path):
        sh(f"find {path} -type f -print0 | xargs -0 cat > /dev/null")
    else:
        sh(f"cat {path} > /dev/null")


def timed(cmd):
    start = time.perf_counter()
    sh(cmd)
    return time.perf_counter() - start


def compare(name, ours, peer, warm_path, setup=None):
    """Alternates ours and the peer RUNS times; returns (median ours, median peer)."""
    a, b = [], []
    for _ in range(RUNS):
        warm(warm_path)
        if setup:
            setup()
        a.append(timed(ours))
        b.append(timed(peer))
    ma, mb = statistics.median(a), statistics.median(b)
    print(f"  {name}: ours {ma:.3f} s, peer {mb:.3f} s  (runs: {', '.join(f'{x:.3f}' for x in a)} | {', '.join(f'{x:.3f}' for x in b)})")
    return ma, mb


def lines(cmd):
    return sorted(sh(cmd).decode().splitlines())


def check_agreement():
    print("checking that digests agree ...")
    assert lines(f"{HASH} --alg blake3 {BIG}") == lines(f"b3sum {BIG}")
    assert lines(f"{HASH} --alg sha256 {BIG}") == lines(f"sha256sum {BIG}")
    ours = lines(f"{HASH} --alg blake3 {TREE}")
    assert ours == lines(f"find {TREE} -type f -print0 | xargs -0 -P2 b3sum --num-threads 1"), "tree blake3"
    ours = lines(f"{HASH} --alg sha256 {TREE}")
    assert ours == lines(f"find {TREE} -type f -print0 | xargs -0 -P2 sha256sum"), "tree sha256"
    ossl = lines(f"{HASH} --alg sha256 {SMALL}")
    peer = sorted(
        f"{l.split('= ')[1]}  {l[len('SHA2-256('):l.index(')= ')]}"
        for l in sh(f"find {SMALL} -type f -print0 | xargs -0 openssl dgst -sha256").decode().splitlines()
    )
    assert ossl == peer, "small sha256 vs openssl"
    print(f"  agree: {len(ours)} tree files, {len(ossl)} small files, the 1 GiB file")


def main():
    print(f"load before: {os.getloadavg()}")
    generate()
    check_agreement()
    nbig = os.path.getsize(BIG)
    ntree, ftree = tree_bytes(TREE), tree_files(TREE)
    fsmall = tree_files(SMALL)
    print(f"data: 1 file of {nbig / 2**30:.2f} GiB; tree {ftree} files {ntree / 2**30:.2f} GiB; small {fsmall} files")
    ratios = []

    o, p = compare("1 GiB blake3 vs b3sum", f"{HASH} --alg blake3 {BIG}", f"b3sum {BIG}", BIG)
    ratios.append(("big_blake3_vs_b3sum", p / o, 1.0, f"{nbig / o / 1e9:.2f} GB/s"))
    o, p = compare("1 GiB sha256 vs openssl", f"{HASH} --alg sha256 {BIG}", f"openssl dgst -sha256 {BIG}", BIG)
    ratios.append(("big_sha256_vs_openssl", p / o, 1.2, f"{nbig / o / 1e9:.2f} GB/s"))
    o, p = compare(
        "1 GiB both vs b3sum+openssl",
        f"{HASH} --alg both {BIG}",
        f"b3sum {BIG} && openssl dgst -sha256 {BIG}",
        BIG,
    )
    ratios.append(("big_both_vs_b3sum_then_openssl", p / o, 1.35, f"{nbig / o / 1e9:.2f} GB/s"))

    xargs = f"find {TREE} -type f -print0 | xargs -0 -P2"
    o, p = compare("tree blake3 vs xargs -P2 b3sum", f"{HASH} --alg blake3 {TREE}", f"{xargs} b3sum --num-threads 1", TREE)
    ratios.append(("tree_blake3_vs_xargs_b3sum", p / o, 1.3, f"{ntree / o / 1e9:.2f} GB/s"))
    o, p = compare("tree sha256 vs xargs -P2 openssl", f"{HASH} --alg sha256 {TREE}", f"{xargs} openssl dgst -sha256", TREE)
    ratios.append(("tree_sha256_vs_xargs_openssl", p / o, 1.15, f"{ntree / o / 1e9:.2f} GB/s"))
    both = []
    for _ in range(RUNS):
        warm(TREE)
        both.append(timed(f"{HASH} --alg both {TREE}"))
    o = statistics.median(both)
    print(f"  tree both: {o:.3f} s")
    ratios.append(("tree_both_gb_per_s", ntree / o / 1e9, 2.4, f"{ftree / o:.0f} files/s"))

    xs = f"find {SMALL} -type f -print0 | xargs -0 -P2 b3sum --num-threads 1"
    o, p = compare("small files blake3 vs xargs -P2 b3sum", f"{HASH} --alg blake3 {SMALL}", xs, SMALL)
    ratios.append(("small_files_per_s_vs_xargs_b3sum", p / o, 2.0, f"{fsmall / o:.0f} files/s"))

    cache = os.path.join(DATA, "cache.bin")
    firsts, seconds = [], []
    for _ in range(RUNS):
        warm(TREE)
        if os.path.exists(cache):
            os.remove(cache)
        firsts.append(timed(f"{HASH} --alg both --cache {cache} {TREE}"))
        seconds.append(timed(f"{HASH} --alg both --cache {cache} {TREE}"))
    f, s = statistics.median(firsts), statistics.median(seconds)
    print(f"  cache: first scan {f:.3f} s, second {s:.3f} s")
    ratios.append(("cache_second_scan_speedup", f / s, 20.0, f"{s * 1000:.0f} ms for {ftree} files"))

    print(f"load after: {os.getloadavg()}")
    print()
    ok = True
    for name, value, goal, note in ratios:
        met = value >= goal
        ok &= met
        print(f"RATIO {name} {value:.2f}  (goal >= {goal}; {note}; {'met' if met else 'NOT MET'})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
