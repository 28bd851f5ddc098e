#!/usr/bin/env bash
# Write the long public text `longattn eval --task ppl` scores: the licence
# texts Debian ships in /usr/share/common-licenses (package base-files,
# installed on every Debian system: GPL-1/2/3, LGPL-2/2.1/3, GFDL-1.2/1.3,
# Apache-2.0, MPL-1.1/2.0, Artistic, BSD, CC0-1.0), the regular files in name
# order, joined by blank lines: about 240 KB, some 55,000 SmolLM2 tokens.
# Usage: scripts/get-eval-text.sh [OUT]   (default build/eval-text.txt,
# git-ignored as build folders are; OUT is relative to the repository root).
# Does nothing when OUT exists.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-build/eval-text.txt}
src=/usr/share/common-licenses
[ -s "$out" ] && exit 0
if [ ! -f "$src/GPL-3" ]; then
    echo "get-eval-text: $src/GPL-3 is missing; install Debian's base-files package (apt-get install base-files)" >&2
    exit 1
fi
mkdir -p "$(dirname "$out")"
tmp=$out.tmp.$$
: > "$tmp"
for f in $(find "$src" -maxdepth 1 -type f | LC_ALL=C sort); do
    cat "$f" >> "$tmp"
    printf '\n\n' >> "$tmp"
done
mv "$tmp" "$out"
echo "get-eval-text: wrote $out ($(wc -c < "$out") bytes from $src, package $(dpkg -S "$src/GPL-3" 2>/dev/null | cut -d: -f1 || echo base-files))"
