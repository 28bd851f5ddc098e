#!/usr/bin/env python3
"""Per-head coverage file (--sparse-heads) from a per-head score file, as
la_sparse_heads_split does (the lowest-scored share of the sparse layers'
heads streaming, coverage 0; ties to the lower index), plus per-layer
coverage overrides for the heads that keep probing.

  bench/data/sparse_heads_file.py SCORES SHARE GAMMA DENSE_LAYERS [FIRST-LAST:G ...] > FILE

Example (the ninth session's file): layers 2-10 at coverage .99, the rest
.995, 30% of the heads of layers 2-29 streaming:
  bench/data/sparse_heads_file.py bench/data/sparse-head-scores-SmolLM2-135M-Instruct.txt 0.3 0.995 2 2-10:0.99
"""
import math
import sys


def main(argv):
    if len(argv) < 5:
        sys.exit(__doc__)
    path, share, gamma, dense = argv[1], float(argv[2]), float(argv[3]), int(argv[4])
    rows = [[float(v) for v in line.split()] for line in open(path) if line.strip() and not line.startswith("#")]
    n_layer, n_head = len(rows), len(rows[0])
    cov = [[gamma] * n_head for _ in range(n_layer)]
    for spec in argv[5:]:
        span, g = spec.split(":")
        first, last = (int(x) for x in span.split("-"))
        for l in range(first, last + 1):
            cov[l] = [float(g)] * n_head
    order = sorted((rows[l][h], l * n_head + h) for l in range(dense, n_layer) for h in range(n_head))
    for _, i in order[: math.floor(share * len(order))]:
        cov[i // n_head][i % n_head] = 0.0
    print("# from %s: share %g streaming (lowest scores, layers %d-%d), coverage %g, overrides %s"
          % (path.split("/")[-1], share, dense, n_layer - 1, gamma, " ".join(argv[5:]) or "none"))
    print("longattn-sparse-gammas 1 %d %d" % (n_layer, n_head))
    for l in range(n_layer):
        print(" ".join("%.6g" % g for g in cov[l]))


if __name__ == "__main__":
    main(sys.argv)
