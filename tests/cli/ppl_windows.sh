#!/bin/sh
# longattn eval --ppl-offset and the per-chunk perplexities: a run of two
# chunks of CTX tokens from the text's start prints both chunks' own
# perplexities ("ppl_windows"), and a run of one chunk from --ppl-offset CTX
# scores exactly the second of them (every chunk starts from an empty cache
# and a reset policy state), so windows further in can be run alone.
# Usage: ppl_windows.sh LONGATTN MODEL TEXT CTX KV; prints "windows agree".
set -eu
bin=$1 model=$2 text=$3 ctx=$4 kv=$5
run() { "$bin" eval -m "$model" --task ppl -f "$text" --ppl-ctx "$ctx" --threads 2 --json --kv "$kv" "$@" | grep '"summary"'; }
both=$(run --ppl-chunks 2)
one=$(run --ppl-chunks 1 --ppl-offset "$ctx")
echo "$both"
echo "$one"
second=$(echo "$both" | sed -n 's/.*"ppl_offset":0,"ppl_windows":\[[0-9.]*,\([0-9.]*\)\].*/\1/p')
alone=$(echo "$one" | sed -n "s/.*\"ppl\":\([0-9.]*\),.*\"ppl_offset\":$ctx,\"ppl_windows\":\[\([0-9.]*\)\].*/\1 \2/p")
if [ -n "$second" ] && [ "$alone" = "$second $second" ]; then
    echo "windows agree: $second"
else
    echo "windows disagree: second chunk '$second', alone (ppl, window) '$alone'"
    exit 1
fi
