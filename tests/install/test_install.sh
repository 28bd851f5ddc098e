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

# Every C block of README.md is an example users copy: each must build
# against the installed library, with pkg-config and with CMake, and run (the
# model example runs on the real model when models/ has it).
awk -v dir="$tmp" '/^```c$/ {n++; inside = 1; next} /^```$/ {inside = 0} inside {print > (dir "/readme_" n ".c")}' \
    "$src/README.md"
examples=$(cd "$tmp" && ls readme_*.c 2>/dev/null | sed 's/\.c$//' | tr '\n' ' ')
[ -n "$examples" ] && ok "README examples extracted: $examples" || { fail "no \`\`\`c block in README.md"; finish; }
model=$src/models/SmolLM2-135M-Instruct.Q4_1.gguf
pkg_of() { grep -q 'longattn_model.h' "$tmp/$1.c" && echo longattn_model || echo longattn; }
run_example() { # binary example-name
    if grep -q 'longattn_model.h' "$tmp/$2.c"; then
        [ -f "$model" ] || { echo "note: $model absent; $2 built, not run"; return 0; }
        "$1" "$model" >"$tmp/$2.out" 2>&1
    else
        "$1" >"$tmp/$2.out" 2>&1
    fi
}

cc=${CC:-cc}
for ex in $examples; do
    if $cc "$tmp/$ex.c" -o "$tmp/${ex}_pc" $(pkg-config --cflags --libs "$(pkg_of "$ex")") 2>"$tmp/cc.log"; then
        ok "$ex builds with pkg-config ($(pkg_of "$ex"))"
        run_example "$tmp/${ex}_pc" "$ex" && ok "$ex (pkg-config) runs" || { fail "$ex (pkg-config) exits non-zero"; cat "$tmp/$ex.out"; }
    else fail "$ex with pkg-config"; cat "$tmp/cc.log"; fi
done
# README's own build line, as written, with $HOME/.local meaning this prefix:
# the program it builds must run with no LD_LIBRARY_PATH set, as a user
# who follows it runs it (it built one that could not find liblongattn.so.0).
readme_cc=$(grep -m 1 '^cc example.c .*pkg-config --cflags --libs longattn' "$src/README.md")
if [ -z "$readme_cc" ]; then fail "README.md has no 'cc example.c ... pkg-config' line"
elif [ "$libdir" != "$prefix/lib" ]; then echo "note: libraries in $libdir, not $prefix/lib as README says; its line not run"
else
    mkdir -p "$tmp/home/.local" "$tmp/literal"
    ln -s "$prefix/lib" "$tmp/home/.local/lib" && ln -s "$prefix/include" "$tmp/home/.local/include"
    cp "$tmp/readme_1.c" "$tmp/literal/example.c"
    if (cd "$tmp/literal" && HOME=$tmp/home PKG_CONFIG_PATH= eval "$readme_cc" 2>"$tmp/cc.log"); then
        ok "README's cc line builds example.c"
        (cd "$tmp/literal" && env -u LD_LIBRARY_PATH ./a.out >"$tmp/literal.out" 2>&1) && ok "README's a.out runs" ||
            { fail "README's a.out (built by: $readme_cc) exits non-zero"; cat "$tmp/literal.out"; }
    else fail "README's cc line: $readme_cc"; cat "$tmp/cc.log"; fi
fi
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
    float logits[4] = {0, 3, 1, 2};
    int32_t tok = -1;
    sp.temperature = 0;
    if (la_sampler_new(&sp, 4, &smp) != LA_OK || la_sampler_sample(smp, logits, &tok) != LA_OK || tok != 1) return 1;
    la_sampler_free(smp);
    return 0;
}
C
if $cc "$tmp/model_example.c" -o "$tmp/model_pc" $(pkg-config --cflags --libs longattn_model) 2>"$tmp/cc.log"; then
    ok "model error example builds with pkg-config"
    "$tmp/model_pc" >/dev/null && ok "model error example runs" || fail "model error example exits $?"
else fail "model error example with pkg-config"; cat "$tmp/cc.log"; fi

# CMake's find_package
mkdir -p "$tmp/consumer"
cp "$tmp"/*.c "$tmp/consumer/"
{
    echo 'cmake_minimum_required(VERSION 3.18)'
    echo 'project(consumer C)'
    echo 'find_package(longattn 0.1 REQUIRED)'
    for ex in $examples; do
        echo "add_executable($ex $ex.c)"
        echo "target_link_libraries($ex PRIVATE longattn::$(pkg_of "$ex"))"
    done
} >"$tmp/consumer/CMakeLists.txt"
if cmake -S "$tmp/consumer" -B "$tmp/consumer/build" -DCMAKE_PREFIX_PATH="$prefix" >"$tmp/cm.log" 2>&1 &&
   cmake --build "$tmp/consumer/build" >>"$tmp/cm.log" 2>&1; then ok "README examples build with find_package(longattn)"
else fail "find_package(longattn) build"; tail -30 "$tmp/cm.log"; fi
for ex in $examples; do
    [ -x "$tmp/consumer/build/$ex" ] || continue
    run_example "$tmp/consumer/build/$ex" "$ex" && ok "$ex (CMake) runs" || { fail "$ex (CMake) exits non-zero"; cat "$tmp/$ex.out"; }
done

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
