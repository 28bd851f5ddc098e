#!/usr/bin/env bash
# Install into a temporary prefix, then use the library as a user would:
# build README.md's C example against the installed headers and shared
# library with pkg-config and with CMake's find_package, and a small program
# against liblongattn_model; run them. Check what the shared libraries
# export (la_* API only) and need (no PCRE2 in liblongattn).
# Usage: test_install.sh BUILD_DIR SOURCE_DIR
set -u
build=$(cd "$1" && pwd) src=$(cd "$2" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0
ok() { passed=$((passed + 1)); echo "ok: $*"; }
fail() { failed=$((failed + 1)); echo "FAIL: $*"; }
finish() { echo "$passed passed, $failed failed"; [ "$failed" -eq 0 ]; exit; }

prefix=$tmp/prefix
if cmake --install "$build" --prefix "$prefix" >"$tmp/install.log" 2>&1; then ok "cmake --install"
else fail "cmake --install"; cat "$tmp/install.log"; finish; fi
libdir=$(dirname "$(find "$prefix" -name liblongattn.so | head -n 1)")
export PKG_CONFIG_PATH=$libdir/pkgconfig LD_LIBRARY_PATH=$libdir

# The README's first C block is the example users copy.
awk '/^```c$/ {inside = 1; next} /^```$/ {if (inside) exit} inside' "$src/README.md" >"$tmp/example.c"
[ -s "$tmp/example.c" ] && ok "README example extracted" || { fail "no \`\`\`c block in README.md"; finish; }
cat >"$tmp/model_example.c" <<'C'
#include <longattn_model.h>
#include <stdio.h>
/* Links against liblongattn_model alone; its failures read through
 * liblongattn's la_last_error. */
int main(void) {
    la_model *m = NULL;
    la_status s = la_model_load("/nonexistent/model.gguf", &m);
    if (s != LA_ERR_IO || !*la_last_error()) return 1;
    printf("%s: %s\n", la_status_name(s), la_last_error());
    la_sampler_params sp = la_sampler_params_default();
    la_sampler *smp = NULL;
    if (la_sampler_new(&sp, 4, &smp) != LA_OK) return 1;
    float logits[4] = {0, 3, 1, 2};
    int32_t tok = -1;
    sp.temperature = 0;
    la_sampler_free(smp);
    if (la_sampler_new(&sp, 4, &smp) != LA_OK || la_sampler_sample(smp, logits, &tok) != LA_OK || tok != 1) return 1;
    la_sampler_free(smp);
    return 0;
}
C

cc=${CC:-cc}
# pkg-config
if $cc "$tmp/example.c" -o "$tmp/ex_pc" $(pkg-config --cflags --libs longattn) 2>"$tmp/cc.log"; then ok "README example builds with pkg-config"
else fail "README example with pkg-config"; cat "$tmp/cc.log"; fi
[ -x "$tmp/ex_pc" ] && { "$tmp/ex_pc" && ok "README example (pkg-config) runs" || fail "README example (pkg-config) exits $?"; }
if $cc "$tmp/model_example.c" -o "$tmp/model_pc" $(pkg-config --cflags --libs longattn_model) 2>"$tmp/cc.log"; then ok "model example builds with pkg-config"
else fail "model example with pkg-config"; cat "$tmp/cc.log"; fi
[ -x "$tmp/model_pc" ] && { "$tmp/model_pc" >/dev/null && ok "model example (pkg-config) runs" || fail "model example (pkg-config) exits $?"; }

# CMake's find_package
mkdir -p "$tmp/consumer"
cp "$tmp/example.c" "$tmp/model_example.c" "$tmp/consumer/"
cat >"$tmp/consumer/CMakeLists.txt" <<'CM'
cmake_minimum_required(VERSION 3.18)
project(consumer C)
find_package(longattn 0.1 REQUIRED)
add_executable(example example.c)
target_link_libraries(example PRIVATE longattn::longattn)
add_executable(model_example model_example.c)
target_link_libraries(model_example PRIVATE longattn::longattn_model)
CM
if cmake -S "$tmp/consumer" -B "$tmp/consumer/build" -DCMAKE_PREFIX_PATH="$prefix" >"$tmp/cm.log" 2>&1 &&
   cmake --build "$tmp/consumer/build" >>"$tmp/cm.log" 2>&1; then ok "README example builds with find_package(longattn)"
else fail "find_package(longattn) build"; tail -30 "$tmp/cm.log"; fi
[ -x "$tmp/consumer/build/example" ] && { "$tmp/consumer/build/example" && ok "README example (CMake) runs" || fail "README example (CMake) exits $?"; }
[ -x "$tmp/consumer/build/model_example" ] && { "$tmp/consumer/build/model_example" >/dev/null && ok "model example (CMake) runs" || fail "model example (CMake) exits $?"; }

# What the shared libraries export and need.
for lib in liblongattn liblongattn_model; do
    so=$libdir/$lib.so
    foreign=$(nm -D --defined-only "$so" | awk '{print $NF}' | grep -v '^la_' | tr '\n' ' ')
    [ -z "$foreign" ] && ok "$lib.so exports only la_* symbols" || fail "$lib.so exports $foreign"
    internal=$(nm -D --defined-only "$so" | awk '{print $NF}' | grep -E '^la_(fail|succeed|workspace|check_tensor|cpu_)|_(scalar|avx2|avx512|avx512_bf16)$' | tr '\n' ' ')
    [ -z "$internal" ] && ok "$lib.so exports no internals" || fail "$lib.so exports internals: $internal"
done
needed=$(readelf -d "$libdir/liblongattn.so" | grep NEEDED)
echo "$needed" | grep -q pcre2 && fail "liblongattn.so needs PCRE2: $needed" || ok "liblongattn.so needs no PCRE2"
readelf -d "$libdir/liblongattn_model.so" | grep NEEDED | grep -q pcre2 && ok "liblongattn_model.so needs PCRE2" ||
    fail "liblongattn_model.so does not link PCRE2 (where is its tokenizer?)"
finish
