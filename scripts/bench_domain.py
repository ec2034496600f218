"""Driver of scripts/bench-domain.sh."""

import os
import random
import statistics
import subprocess
import sys
import time

DATA = os.environ["BENCH_DATA"]
RUNS = int(os.environ["RUNS"])
N = int(os.environ["N"])
OURS = "target/release/examples/normalize"
WORDS = ["www", "mail", "cdn", "api", "login", "static", "news", "shop", "acme", "cloud", "files", "media",
         "portal", "img", "eu-west-1", "app"]
SUFFIXES = ["com", "org", "net", "co.uk", "de", "io", "github.io", "com.au", "fr", "s3.amazonaws.com", "jp",
            "blogspot.com", "ck", "kobe.jp", "example", "xn--fiqs8s"]

PEER = """
import sys
from publicsuffixlist import PublicSuffixList
psl = PublicSuffixList()
out = sys.stdout
for line in sys.stdin:
    host = line.rstrip("\\n")
    reg = psl.privatesuffix(host)
    out.write(f"{host}\\t{reg or ''}\\n")
"""


def corpus():
    path = os.path.join(DATA, f"hosts-{N}.txt")
    if not os.path.exists(path):
        rng = random.Random(20261127)
        with open(path, "w") as f:
            for _ in range(N):
                labels = [rng.choice(WORDS) for _ in range(rng.randint(0, 3))]
                labels.append(f"site{rng.randrange(50000)}")
                labels.append(rng.choice(SUFFIXES))
                f.write(".".join(labels) + "\n")
    return path


def run(cmd, path):
    with open(path, "rb") as stdin:
        start = time.perf_counter()
        out = subprocess.run(cmd, stdin=stdin, stdout=subprocess.PIPE, check=True).stdout
        return time.perf_counter() - start, out


def main():
    print(f"load before: {os.getloadavg()}")
    path = corpus()
    peer = [sys.executable, "-c", PEER]
    _, ours_out = run([OURS], path)
    _, peer_out = run(peer, path)
    ours_lines, peer_lines = ours_out.decode().splitlines(), peer_out.decode().splitlines()
    assert len(ours_lines) == len(peer_lines) == N
    differ = [(a, b) for a, b in zip(ours_lines, peer_lines) if a != b]
    print(f"agreement: {N - len(differ)} of {N} lines identical")
    for a, b in differ[:5]:
        print(f"  ours {a!r} / publicsuffixlist {b!r}")
    assert not differ, "outputs differ"
    a, b = [], []
    for _ in range(RUNS):
        a.append(run([OURS], path)[0])
        b.append(run(peer, path)[0])
    ma, mb = statistics.median(a), statistics.median(b)
    print(f"ours {ma:.3f} s ({N / ma / 1e6:.2f} M inputs/s), publicsuffixlist {mb:.3f} s ({N / mb / 1e6:.2f} M/s)")
    print(f"load after: {os.getloadavg()}")
    print(f"RATIO bare_hosts_vs_publicsuffixlist {mb / ma:.2f}  (goal >= 10; ours {N / ma / 1e6:.2f} M/s end to end, one core)")


if __name__ == "__main__":
    main()
