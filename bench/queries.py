"""Write a dnsperf query file: the mail-domain mix of issue 4.

45% `example.com MX`, 45% `mx.example.com A`, 10% random names that do not exist
(`<12 hex digits>.example.com A`, answered NXDOMAIN), shuffled, from a fixed seed so every
run sends the same file. dnsperf loops over the file, so its size only bounds how many
distinct NXDOMAIN names a run sees. bench/measure.py writes a new pair of files (new seeds) for
every round, so no server meets a round's nonexistent names already cached from an earlier run.

    python3 bench/queries.py OUT.txt [--lines 100000] [--seed 1]
"""

from __future__ import annotations

import argparse
import random


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output")
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if not 10 <= args.lines <= 10_000_000:
        parser.error("--lines must be between 10 and 10,000,000")

    write_queries(args.output, args.lines, args.seed)


def write_queries(path: str, lines: int, seed: int) -> None:
    rng = random.Random(seed)
    mx = int(lines * 0.45)
    a = int(lines * 0.45)
    nx = lines - mx - a
    queries = ["example.com MX"] * mx + ["mx.example.com A"] * a
    queries += [f"{rng.getrandbits(48):012x}.example.com A" for _ in range(nx)]
    rng.shuffle(queries)
    with open(path, "w", encoding="ascii") as out:
        out.write("\n".join(queries) + "\n")


if __name__ == "__main__":
    main()
