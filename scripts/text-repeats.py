#!/usr/bin/env python3
"""How much a perplexity text repeats itself, in words (whitespace-split).

Prints, per file: the share of word N-gram positions (default N = 32) whose
N-gram occurs more than once in the file, and the longest run of words that
occurs twice (searched up to --cap words). A long-context perplexity text
should have next to none: where it repeats, a full KV cache copies from far
back and any evicting cache cannot, so the comparison measures the text.
For scripts/get-eval-text.sh's texts:
  default (Alice + LOC workshop)  0.06% of 32-grams repeated, longest run 48 words
  --licences (Debian base-files)  38.6% of 32-grams repeated, longest run 2019 words
Usage: scripts/text-repeats.py [-n N] [--cap WORDS] FILE...
"""
import argparse
import collections


def has_repeat(words, k):
    seen = set()
    for i in range(len(words) - k + 1):
        g = tuple(words[i:i + k])
        if g in seen:
            return True
        seen.add(g)
    return False


def analyse(path, n, cap):
    with open(path, encoding="latin-1") as f:
        words = f.read().split()
    grams = collections.Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    total = max(len(words) - n + 1, 1)
    repeated = sum(1 for i in range(len(words) - n + 1) if grams[tuple(words[i:i + n])] > 1)
    lo, hi = 0, min(len(words), cap)
    while lo < hi:  # the longest k with a repeated k-gram (a repeat of k implies one of k - 1)
        mid = (lo + hi + 1) // 2
        if has_repeat(words, mid):
            lo = mid
        else:
            hi = mid - 1
    print(f"{path}: {len(words)} words, {100.0 * repeated / total:.2f}% of word {n}-grams repeated, "
          f"longest repeated run {lo}{'+' if lo == cap else ''} words")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=32, help="n-gram length in words (default 32)")
    ap.add_argument("--cap", type=int, default=4096, help="longest run searched, in words (default 4096)")
    ap.add_argument("files", nargs="+")
    a = ap.parse_args()
    for p in a.files:
        analyse(p, a.n, a.cap)


if __name__ == "__main__":
    main()
