#!/usr/bin/env python3
"""Two builds of longattn side by side on this machine: the figures a change
must not move (exact attention at the target shape, decode, model prefill
and generation), the builds taking turns so a neighbour's load falls on
both. Prints one JSON object per measurement, then a table of the best of
--repeat runs per build. Attention and decode figures are ratios to the
ceiling each `longattn bench` run measured beside them.

    bench/compare_builds.py --a /tmp/before/longattn --b build/longattn --repeat 3
"""
import argparse
import json
import os
import re
import subprocess
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {r.returncode}:\n{r.stdout}{r.stderr}")
    return r


def bench_lines(out):
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def measure(binary, args, prompt_file, run_args):
    """(name, value, unit, ratio or None) for one build, once."""
    got = []
    r = run([binary, "bench", "attention", "--L", "4096", "--D", "128", "--causal", "0", "--dtype", "f32",
             "--pass", "fwd,bwd", "--threads", str(args.threads), "--json"])
    for row in bench_lines(r.stdout):
        if row.get("op") == "attention" and "gflops" in row:
            got.append((f"attention f32 {row['pass']} L=4096 D=128", row["gflops"], "GFLOP/s", row["ratio"]))
    r = run([binary, "bench", "decode", "--dtype", "f32", "--L", "32768", "--threads", str(args.threads), "--json"])
    for row in bench_lines(r.stdout):
        if row.get("op") == "decode" and "gbps" in row:
            got.append((f"decode f32 {row['cache']} L=32768", row["gbps"], "GB/s", row["ratio"]))
    pattern = r"{}:\s+(\d+) tokens in\s+[\d.]+ s =\s+([\d.]+) tokens/s"
    r = run([binary, "run", "-m", args.model, "-f", prompt_file, "--raw", "-n", "1", "--threads", str(args.threads)] + run_args)
    m = re.search(pattern.format("prompt"), r.stderr)
    if m:
        got.append((f"model prefill ({m.group(1)} tokens)", float(m.group(2)), "tokens/s", None))
    r = run([binary, "run", "-m", args.model, "-p", "The capital of France is", "--raw", "-n", "129", "--temp", "0",
             "--threads", str(args.threads)] + run_args)
    m = re.search(pattern.format("generation"), r.stderr)
    if m:
        got.append((f"model generation ({m.group(1)} tokens)", float(m.group(2)), "tokens/s", None))
    return got


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", required=True, help="the first build's longattn binary (e.g. before a change)")
    ap.add_argument("--b", default=os.path.join(ROOT, "build", "longattn"), help="the second build's binary")
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--text", default=os.path.join(HERE, "data", "ppl-text.txt"))
    ap.add_argument("--prompt-chars", type=int, default=9000, help="prompt for prefill: this many characters of --text")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--a-run-args", default="", help="extra options for the first build's `longattn run`")
    ap.add_argument("--b-run-args", default="", help="extra options for the second build's `longattn run` "
                    "(e.g. --kv-type f32 to match an older build's f32 cache)")
    args = ap.parse_args()
    with open(args.text, encoding="utf-8") as fh:
        prompt = fh.read()[:args.prompt_chars]
    best = {}
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as fh:
        fh.write(prompt)
        prompt_file = fh.name
    try:
        for rep in range(args.repeat):
            for label, binary, extra in (("a", args.a, args.a_run_args), ("b", args.b, args.b_run_args)):
                for name, value, unit, ratio in measure(binary, args, prompt_file, extra.split()):
                    print(json.dumps({"build": label, "repeat": rep, "measure": name, "value": value, "unit": unit,
                                      "ratio": ratio}), flush=True)
                    key = (name, label)
                    if key not in best or value > best[key][0]:
                        best[key] = (value, unit, ratio)
    finally:
        os.unlink(prompt_file)
    names = sorted({k[0] for k in best}, key=lambda n: list(k[0] for k in best).index(n))
    print(f"\n{'measure':42} {'a':>22} {'b':>22} {'b/a':>6}")
    for name in names:
        cells = []
        for label in ("a", "b"):
            v = best.get((name, label))
            cells.append(f"{v[0]:.1f} {v[1]}" + (f" ({v[2]:.3f})" if v and v[2] is not None else "") if v else "-")
        a, b = best.get((name, "a")), best.get((name, "b"))
        print(f"{name:42} {cells[0]:>22} {cells[1]:>22} {b[0] / a[0] if a and b else float('nan'):6.3f}")


if __name__ == "__main__":
    main()
