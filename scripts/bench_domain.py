"""Driver of scripts/bench-domain.sh.

Two corpora, each N lines, fixed seed:

* `common`: bare host names under 16 common suffixes (the domain issue's
  corpus);
* `broad`: hosts made from every rule of the embedded Public Suffix List
  itself (crates/domain/data/public_suffix_list.dat), ICANN and private
  sections: for a rule `a.b`, the suffix itself and one and two labels
  under it; for a wildcard `*.b`, a label under `b` (itself a suffix) and
  one and two labels under that, and `b` itself; for an exception `!x.b`, `x.b` and a label
  under it; every rule with a non-ASCII label in its Unicode and its
  punycode form.

Outputs are compared in ASCII (punycode) form: the peer answers Unicode
inputs in Unicode. Lines that still differ are counted by cause and shown;
the WHATWG contract of `privtel-domain` decides some of them (see the
crate's README, "The contract").
"""

import os
import random
import statistics
import subprocess
import sys
import time

DATA = os.environ["BENCH_DATA"]
RUNS = int(os.environ["RUNS"])
N = int(os.environ["N"])
# The binary scripts/bench-domain.sh just built, in cargo's target directory.
OURS = os.path.join(os.environ.get("CARGO_TARGET_DIR") or "target", "release", "examples", "normalize")
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


LIST = "crates/domain/data/public_suffix_list.dat"


def ascii_host(host):
    """The host in ASCII (punycode) form, label by label; unchanged if a
    label cannot be encoded (the comparison then shows it)."""
    out = []
    for label in host.split("."):
        if label.isascii():
            out.append(label.lower())
            continue
        try:
            out.append("xn--" + label.lower().encode("punycode").decode("ascii"))
        except UnicodeError:
            out.append(label)
    return ".".join(out)


def broad_corpus():
    path = os.path.join(DATA, f"broad2-{N}.txt")
    if os.path.exists(path):
        return path
    rules = []
    with open(LIST, encoding="utf-8") as f:
        for line in f:
            rule = line.strip().split()[0] if line.strip() else ""
            if rule and not rule.startswith("//"):
                rules.append(rule)
    rng = random.Random(20261130)
    hosts = []
    while len(hosts) < N:
        for rule in rules:
            word = lambda: rng.choice(WORDS) + str(rng.randrange(1000))
            if rule.startswith("!"):
                base = rule[1:]
                made = [base, f"{word()}.{base}"]
            elif rule.startswith("*."):
                base = rule[2:]
                under = f"{word()}.{base}"
                # `base` itself too: a wildcard over it may match its
                # first label (`r.cloud.int.apple` under `*.cloud.int.apple`).
                made = [base, under, f"{word()}.{under}", f"{word()}.{word()}.{under}"]
            else:
                made = [rule, f"{word()}.{rule}", f"{word()}.{word()}.{rule}"]
            for host in made:
                hosts.append(host)
                if not host.isascii():
                    hosts.append(ascii_host(host))
    rng.shuffle(hosts)
    with open(path, "w", encoding="utf-8") as f:
        for host in hosts[:N]:
            f.write(host + "\n")
    print(f"broad corpus: {len(rules)} rules of {LIST}, {N} hosts")
    return path


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


def compare(ours_out, peer_out):
    """(identical, differing pairs), the peer's answers in ASCII form."""
    ours_lines, peer_lines = ours_out.decode().splitlines(), peer_out.decode().splitlines()
    assert len(ours_lines) == len(peer_lines) == N, (len(ours_lines), len(peer_lines))
    differ = []
    for a, b in zip(ours_lines, peer_lines):
        host, _, reg = b.partition("\t")
        b = f"{ascii_host(host)}\t{ascii_host(reg) if reg else ''}"
        if a != b:
            differ.append((a, b))
    return N - len(differ), differ


def wildcard_parents():
    """Every `b` of a rule `*.b`, in ASCII form."""
    out = set()
    with open(LIST, encoding="utf-8") as f:
        for line in f:
            rule = line.strip().split()[0] if line.strip() else ""
            if rule.startswith("*."):
                out.add(ascii_host(rule[2:]))
    return out


WILDCARD_PARENTS = wildcard_parents()


def cause(ours, peer):
    """Why a line differs, in a few words."""
    host = ours.split("\t")[0]
    if host in WILDCARD_PARENTS and not peer.split("\t")[1]:
        return (
            "the host is the parent b of a rule *.b: a public suffix for publicsuffixlist; under the list's "
            "format a wildcard needs one label more, so b's own rules decide (as for the publicsuffix crate)"
        )
    if ours.startswith("ERROR"):
        return f"ours refuses the input ({ours.split(chr(9), 1)[1]})"
    if ours.split("\t")[0] != peer.split("\t")[0]:
        return "the host itself differs (WHATWG host parsing)"
    if not ours.split("\t")[1]:
        return "no registrable domain for ours"
    if not peer.split("\t")[1]:
        return "no registrable domain for the peer"
    return "different registrable domains"


def measure(name, path, goal):
    peer = [sys.executable, "-c", PEER]
    _, ours_out = run([OURS], path)
    _, peer_out = run(peer, path)
    same, differ = compare(ours_out, peer_out)
    print(f"{name}: agreement: {same} of {N} lines identical, {len(differ)} differ")
    causes = {}
    for a, b in differ:
        causes.setdefault(cause(a, b), []).append((a, b))
    for c, pairs in sorted(causes.items(), key=lambda kv: -len(kv[1])):
        print(f"  {len(pairs):7} {c}; e.g. ours {pairs[0][0]!r} / publicsuffixlist {pairs[0][1]!r}")
    a, b = [], []
    for _ in range(RUNS):
        a.append(run([OURS], path)[0])
        b.append(run(peer, path)[0])
    ma, mb = statistics.median(a), statistics.median(b)
    ratios = sorted(y / x for x, y in zip(a, b))
    print(f"{name}: ours {ma:.3f} s ({N / ma / 1e6:.2f} M inputs/s), publicsuffixlist {mb:.3f} s ({N / mb / 1e6:.2f} M/s)")
    print(
        f"RATIO {name}_hosts_vs_publicsuffixlist {mb / ma:.2f}  (goal >= {goal}; run by run "
        f"{ratios[0]:.2f}-{ratios[-1]:.2f}; ours {N / ma / 1e6:.2f} M/s end to end, one core)"
    )
    return differ


def main():
    print(f"load before: {os.getloadavg()}")
    which = os.environ.get("CORPUS", "common broad").split()
    if "common" in which:
        differ = measure("bare", corpus(), 10)
        assert not differ, "outputs differ on the common corpus"
    if "broad" in which:
        measure("broad", broad_corpus(), 10)
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
