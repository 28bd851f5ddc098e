#!/usr/bin/env python3
"""longattn vs llama.cpp on the same GGUF model, on the CPU.

Measures, for both, with the same thread count:
  - prompt processing: a prompt of --pp-tokens tokens (tokens/s),
  - generation: --tg-tokens greedy tokens after a short prompt (tokens/s),
  - perplexity over --text, computed as llama.cpp's perplexity tool does
    (non-overlapping chunks of --ctx tokens, second half of each scored);
  - long-context generation (part `longctx`): --long-tg greedy tokens after
    a prompt of --long-ctx tokens, llama.cpp in each --long-llama config (its
    defaults: f16 KV cache, flash attention off; f16+fa; q8_0+fa) against
    longattn with each --long-kv-types cache (and --longattn-base, an older
    build, for an A/B), taking turns for --repeat rounds, with the bytes each
    step reads (weights + KV cache in use) and a markdown table of the ratios
    on stderr. Only this part: --skip check,speed,ppl.

llama.cpp runs through llama-cpp-python (run this script with the Python of
the virtual environment that has it, e.g. ~/.cache/longattn/venv-llama/bin/python);
longattn runs as the `longattn run` / `longattn ppl` commands, whose own
timings are parsed from stderr. Prints one JSON object per line. Before
timing, both continue one prompt greedily and must agree (see --tie-margin).
"""
import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def emit(**fields):
    print(json.dumps(fields), flush=True)


# ------------------------------------------------------------------ llama.cpp

def llama_load(args, n_ctx, logits_all):
    from llama_cpp import Llama
    return Llama(model_path=args.model, n_ctx=n_ctx, n_batch=args.batch, n_threads=args.threads,
                 n_threads_batch=args.threads, logits_all=logits_all, verbose=False)


def llama_tokens(llm, text):
    return llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)


def llama_last_logits(llm):
    """The logits of the last token evaluated. With logits_all=False,
    llama-cpp-python 0.3.x no longer copies them into llm.scores (it stays
    all zero), so read llama.cpp's own output buffer: eval marks the last
    token of each batch as an output, and index -1 is the last output row."""
    import llama_cpp
    import numpy as np
    row = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
    if not row:
        raise RuntimeError("llama_get_logits_ith returned NULL: no logits from the last eval")
    return np.ctypeslib.as_array(row, shape=(llm.n_vocab(),))


def llama_greedy(llm):
    import numpy as np
    return int(np.argmax(llama_last_logits(llm)))


def llama_generate(args, prompt_tokens, n_gen):
    """Greedy tokens after prompt_tokens, at most n_gen, stopping at an
    end-of-generation token as longattn run does. Returns the tokens, for
    each k the text of the first k of them (bytes), the logits each token
    was chosen from, and the loaded model (for its tokenizer)."""
    import llama_cpp
    llm = llama_load(args, len(prompt_tokens) + n_gen + 16, False)
    llm.eval(prompt_tokens)
    out, logits = [], []
    while len(out) < n_gen:
        row = llama_last_logits(llm).copy()  # the buffer is overwritten by the next eval
        tok = int(row.argmax())
        if llama_cpp.llama_vocab_is_eog(llm._model.vocab, tok):
            break
        out.append(tok)
        logits.append(row)
        llm.eval([tok])
    texts = [llm.detokenize(out[:k]) for k in range(1, len(out) + 1)]
    return out, texts, logits, llm


def llama_speed(args, prompt_tokens, gen_prompt_tokens):
    """One measurement: prompt tokens/s over prompt_tokens; generation
    tokens/s of greedy single-token evals after gen_prompt_tokens."""
    llm = llama_load(args, len(prompt_tokens) + args.tg_tokens + 16, False)
    t0 = time.perf_counter()
    llm.eval(prompt_tokens)
    pp = len(prompt_tokens) / (time.perf_counter() - t0)
    llm.reset()
    llm.eval(gen_prompt_tokens)
    spent = 0.0
    for _ in range(args.tg_tokens):
        tok = llama_greedy(llm)
        t0 = time.perf_counter()
        llm.eval([tok])
        spent += time.perf_counter() - t0
    del llm  # its thread pool must not compete with what runs next
    return pp, args.tg_tokens / spent


# llama.cpp KV-cache types for --long-llama: ggml type ids (ggml.h)
LLAMA_KV_TYPES = {"f16": 1, "q8_0": 8}


def llama_long_config(spec):
    """'f16', 'f16+fa', 'q8_0+fa' -> (cache type name, flash attention on)."""
    kv, _, fa = spec.partition("+")
    if kv not in LLAMA_KV_TYPES or fa not in ("", "fa"):
        sys.exit("llama_cpp_compare: --long-llama entry %r is not one of f16, f16+fa, q8_0+fa" % spec)
    if kv != "f16" and not fa:
        sys.exit("llama_cpp_compare: llama.cpp quantises the V cache only with flash attention: use %s+fa" % kv)
    return kv, bool(fa)


class LlamaLong:
    """One llama.cpp context per --long-llama config, the prompt evaluated
    once: each round rewinds the cache to the prompt (llama-cpp-python's
    eval drops the cache past n_tokens) and times --long-tg greedy
    single-token evals from the same first token, so every round reads the
    same cache lengths."""

    def __init__(self, args, prompt_tokens, spec):
        from llama_cpp import Llama
        kv, fa = llama_long_config(spec)
        self.args, self.spec, self.n_prompt = args, spec, len(prompt_tokens)
        self.llm = Llama(model_path=args.model, n_ctx=len(prompt_tokens) + args.long_tg + 16, n_batch=args.batch,
                         n_threads=args.threads, n_threads_batch=args.threads, logits_all=False, verbose=False,
                         flash_attn=fa, type_k=LLAMA_KV_TYPES[kv], type_v=LLAMA_KV_TYPES[kv])
        t0 = time.perf_counter()
        self.llm.eval(prompt_tokens)
        self.prompt_tps = len(prompt_tokens) / (time.perf_counter() - t0)
        self.first = llama_greedy(self.llm)
        md = self.llm.metadata
        arch = md.get("general.architecture", "llama")
        layers = int(md["%s.block_count" % arch])
        heads = int(md["%s.attention.head_count" % arch])
        kv_heads = int(md.get("%s.attention.head_count_kv" % arch, heads))
        head_dim = int(md.get("%s.attention.key_length" % arch, int(md["%s.embedding_length" % arch]) // heads))
        # bytes per cached element: f16 2, q8_0 34 per block of 32
        elem = 2.0 if kv == "f16" else 34.0 / 32.0
        tokens = len(prompt_tokens) + args.long_tg // 2  # the cache's mean length over the timed steps
        self.kv_bytes = int(layers * kv_heads * head_dim * 2 * elem * tokens)

    def round(self):
        """Generation tokens/s of one round."""
        self.llm.n_tokens = self.n_prompt
        tok, spent = self.first, 0.0
        for _ in range(self.args.long_tg):
            t0 = time.perf_counter()
            self.llm.eval([tok])
            spent += time.perf_counter() - t0
            tok = llama_greedy(self.llm)
        return self.args.long_tg / spent

    def close(self):
        self.llm.close() if hasattr(self.llm, "close") else None
        del self.llm


def llama_perplexity(args, text):
    """llama.cpp's perplexity algorithm on llama.cpp's logits."""
    import numpy as np
    llm = llama_load(args, args.ctx, True)
    add_bos = llm._model.add_bos_token() if hasattr(llm._model, "add_bos_token") else False
    tokens = llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=False)
    n_ctx, first = args.ctx, args.ctx // 2
    n_chunks = len(tokens) // n_ctx
    nll = nll2 = 0.0
    count = 0
    t0 = time.perf_counter()
    for c in range(n_chunks):
        chunk = list(tokens[c * n_ctx:(c + 1) * n_ctx])
        if add_bos:
            chunk[0] = llm.token_bos()
        llm.reset()
        llm.eval(chunk)
        logits = np.asarray(llm.scores[first:n_ctx - 1], dtype=np.float64)
        targets = np.asarray(tokens[c * n_ctx + first + 1:(c + 1) * n_ctx])
        mx = logits.max(axis=1, keepdims=True)
        lse = np.log(np.exp(logits - mx).sum(axis=1)) + mx[:, 0]
        x = lse - logits[np.arange(len(targets)), targets]
        nll += float(x.sum())
        nll2 += float((x * x).sum())
        count += len(targets)
    seconds = time.perf_counter() - t0
    mean = nll / count
    ppl = math.exp(mean)
    var = nll2 / count - mean * mean
    err = ppl * math.sqrt(var / (count - 1)) if var > 0 and count > 1 else 0.0
    return ppl, err, len(tokens), n_chunks, n_chunks * n_ctx / seconds


# ------------------------------------------------------------------ longattn

def run_checked(cmd):
    """Runs cmd; returns (stdout bytes, stderr text). Bytes, because the
    agreement check compares generated text byte for byte."""
    r = subprocess.run(cmd, capture_output=True)
    err = r.stderr.decode("utf-8", "replace")
    if r.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(cmd), r.returncode, err.strip()))
    return r.stdout, err


def longattn_run(args, prompt_text, n_gen, extra=(), ctx=None, binary=None):
    """(prompt tokens, prompt tokens/s, forward passes, generation tokens/s,
    KV-cache bytes, generated bytes)."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write(prompt_text)
        path = f.name
    try:
        cmd = [binary or args.longattn, "run", "-m", args.model, "-f", path, "--raw", "-n", str(n_gen), "--temp", "0",
               "--threads", str(args.threads), "--ctx", str(ctx or args.pp_tokens + args.tg_tokens + 256)] + list(extra)
        out, err = run_checked(cmd)
    finally:
        os.unlink(path)
    pp = re.search(r"prompt:\s+(\d+) tokens in\s+([\d.]+) s =\s+([\d.]+) tokens/s", err)
    tg = re.search(r"generation:\s+(\d+) tokens in\s+([\d.]+) s =\s+([\d.]+) tokens/s \((\d+) forward", err)
    kv = re.search(r"KV cache:\s+(\d+) bytes", err)
    if not (pp and tg and kv):
        raise RuntimeError("cannot parse longattn run's stderr:\n" + err)
    text = out[:-1] if out.endswith(b"\n") else out  # run ends its output with one newline
    return (int(pp.group(1)), float(pp.group(3)), int(tg.group(4)), float(tg.group(3)), int(kv.group(1)), text)


def longattn_speed(args, prompt_text, gen_prompt_text):
    """One measurement, as llama_speed: (prompt tokens, prompt tokens/s,
    generated tokens, generation tokens/s, KV-cache bytes)."""
    n_pp, pp, _, _, kv, _ = longattn_run(args, prompt_text, 1)
    _, _, n_tg, tg, _, _ = longattn_run(args, gen_prompt_text, args.tg_tokens + 1)
    return n_pp, pp, n_tg, tg, kv


def longattn_perplexity(args):
    cmd = [args.longattn, "ppl", "-m", args.model, "-f", args.text, "--ctx", str(args.ctx), "--threads",
           str(args.threads)]
    out, err = run_checked(cmd)
    out = out.decode("utf-8", "replace")
    m = re.search(r"Final estimate: PPL = ([\d.]+) \+/- ([\d.]+)", out)
    t = re.search(r"(\d+) tokens evaluated in\s+([\d.]+) s =\s+([\d.]+) tokens/s", err)
    n = re.search(r": (\d+) tokens, (\d+) chunks", err)
    if not (m and t and n):
        raise RuntimeError("cannot parse longattn ppl output:\n" + out + err)
    return float(m.group(1)), float(m.group(2)), int(n.group(1)), int(n.group(2)), float(t.group(3))


def check_agreement(args, prompt_tokens, prompt_text, common):
    """Both tools' greedy continuations of the same prompt, before any
    timing: a speed ratio means little if the two do not compute the same
    thing. longattn prints text, not token ids, so a llama.cpp token counts
    as agreeing while the text up to it is a prefix of longattn's (at the
    first difference this can count one token too many, e.g. " Par" against
    " Paris"). Returns whether they agree."""
    l_toks, l_texts, l_logits, llm = llama_generate(args, prompt_tokens, args.check_tokens)
    a_n_prompt, _, _, _, _, a_text = longattn_run(args, prompt_text, args.check_tokens)
    k = 0
    while k < len(l_texts) and a_text.startswith(l_texts[k]):
        k += 1
    l_text = l_texts[-1] if l_texts else b""
    # Where the texts part, how far llama.cpp's own pick is above longattn's
    # (longattn's next token taken as llama.cpp tokenises the rest of its
    # text). A near tie is numeric noise, not a different model: llama.cpp's
    # one-token and batched evals of the same tokens differ by up to ~0.65 in
    # a logit here, enough to flip a pick 0.1 apart.
    margin = None
    rest = a_text[len(l_texts[k - 1]) if k else 0:]
    if l_text != a_text and k < len(l_toks) and rest:
        a_tok = llm.tokenize(rest, add_bos=False, special=False)[0]
        margin = float(l_logits[k][l_toks[k]] - l_logits[k][a_tok])
    del llm
    agree = a_n_prompt == len(prompt_tokens) and (
        l_text == a_text or (margin is not None and margin <= args.tie_margin))
    emit(tool="check", metric="greedy_agreement", agree=agree, agree_tokens=k, tokens=args.check_tokens,
         tie_margin=None if margin is None else round(margin, 4), prompt_tokens=len(prompt_tokens),
         longattn_prompt_tokens=a_n_prompt, llama_cpp_tokens=l_toks,
         llama_cpp_text=l_text.decode("utf-8", "replace"), longattn_text=a_text.decode("utf-8", "replace"),
         **common)
    return agree


def load_average():
    try:
        return float(open("/proc/loadavg").read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def long_generation(args, text, common):
    """Generation at a long context, side by side: each --long-llama config
    of llama.cpp (its defaults are f16 without flash attention), longattn
    with each --long-kv-types cache and, with --longattn-base, an older
    longattn binary take turns for --repeat rounds; every round is printed
    (with the load average), then the best round of each and its ratio to
    each llama.cpp config, and a markdown table on stderr. Bytes per step:
    the weights (the GGUF file's size, every weight read once per token)
    plus the KV cache in use (longattn's own count at the end of the run;
    llama.cpp's computed from the model's shape and cache type)."""
    llm = llama_load(args, 64, False)
    toks = llama_tokens(llm, text)
    if len(toks) < args.long_ctx:
        sys.exit("llama_cpp_compare: %s has %d tokens, fewer than --long-ctx" % (args.text, len(toks)))
    prompt = toks[:args.long_ctx]
    prompt_text = llm.detokenize(prompt).decode("utf-8", "replace")
    del llm
    weights = os.path.getsize(args.model)
    kv_types = [t for t in args.long_kv_types.split(",") if t]
    specs = [c for c in args.long_llama.split(",") if c]
    for c in specs:
        llama_long_config(c)
    binaries = [("longattn", args.longattn)] + ([("longattn-base", args.longattn_base)] if args.longattn_base else [])
    ctx = args.long_ctx + args.long_tg + 256
    best, kv_bytes, prompt_tps = {}, {}, {}
    # llama.cpp evaluates each config's prompt once (contexts kept across
    # rounds); longattn runs a process per round, prompt included
    contexts = []
    for c in specs:
        contexts.append(LlamaLong(args, prompt, c))
        kv_bytes[("llama.cpp", c)] = contexts[-1].kv_bytes
        prompt_tps[("llama.cpp", c)] = contexts[-1].prompt_tps
    for r in range(args.repeat):
        for lc in contexts:
            load = load_average()
            tps = lc.round()
            key = ("llama.cpp", lc.spec)
            best[key] = max(best.get(key, 0.0), tps)
            emit(tool="llama.cpp", metric="long_generation_round", kv_type=lc.spec, round=r, value=round(tps, 2),
                 load=load, **common)
        for name, binary in binaries:
            for t in kv_types:
                load = load_average()
                _, pp, _, tps, kv, _ = longattn_run(args, prompt_text, args.long_tg + 1, ("--kv-type", t), ctx,
                                                    binary)
                key = (name, t)
                best[key], kv_bytes[key] = max(best.get(key, 0.0), tps), kv
                prompt_tps[key] = max(prompt_tps.get(key, 0.0), pp)
                emit(tool=name, metric="long_generation_round", kv_type=t, round=r, value=round(tps, 2), load=load,
                     **common)
    for lc in contexts:
        lc.close()
    rows = [("llama.cpp", c) for c in specs] + [(n, t) for n, _ in binaries for t in kv_types]
    for key in rows:
        emit(tool=key[0], metric="long_generation_tps", kv_type=key[1], ctx=args.long_ctx, tokens=args.long_tg,
             value=round(best[key], 2), kv_bytes=kv_bytes[key], bytes_per_token=weights + kv_bytes[key],
             read_gbps=round((weights + kv_bytes[key]) * best[key] / 1e9, 2), prompt_tps=round(prompt_tps[key], 2),
             **common)
    for key in rows[len(specs):]:
        for c in specs:
            emit(tool="ratio", metric="long_generation_tps", kv_type=key[1], binary=key[0], vs="llama.cpp " + c,
                 value=round(best[key] / best[("llama.cpp", c)], 3), **common)
    # the table, for a report
    out = sys.stderr
    print("\ngeneration at a %d-token context, %d tokens timed, %d threads, best of %d rounds"
          % (args.long_ctx, args.long_tg, args.threads, args.repeat), file=out)
    print("| tool | KV cache | tokens/s | bytes read per token | GB/s | %s |"
          % " | ".join("vs llama.cpp " + c for c in specs), file=out)
    print("|---|---|---:|---:|---:|%s" % ("---:|" * len(specs)), file=out)
    for key in rows:
        b = weights + kv_bytes[key]
        print("| %s | %s | %.2f | %.1f MB | %.2f | %s |" % (key[0], key[1], best[key], b / 1e6, b * best[key] / 1e9,
              " | ".join("%.2fx" % (best[key] / best[("llama.cpp", c)]) for c in specs)), file=out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--longattn", default=os.path.join(ROOT, "build", "longattn"))
    ap.add_argument("--text", default=os.path.join(HERE, "data", "ppl-text.txt"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pp-tokens", type=int, default=2048)
    ap.add_argument("--tg-tokens", type=int, default=128)
    ap.add_argument("--ctx", type=int, default=512, help="perplexity chunk length (llama.cpp -c)")
    ap.add_argument("--batch", type=int, default=512, help="llama.cpp n_batch")
    ap.add_argument("--repeat", type=int, default=3, help="best of this many speed runs, the tools taking turns")
    ap.add_argument("--check-tokens", type=int, default=8,
                    help="greedy tokens both tools generate for the agreement check")
    ap.add_argument("--tie-margin", type=float, default=0.5,
                    help="the check still passes if the texts part where llama.cpp's logit for its own "
                         "token is at most this much above longattn's token")
    ap.add_argument("--allow-mismatch", action="store_true",
                    help="time the tools even if their greedy tokens disagree")
    ap.add_argument("--long-ctx", type=int, default=8192, help="longctx part: prompt tokens before generation")
    ap.add_argument("--long-tg", type=int, default=64, help="longctx part: greedy tokens timed")
    ap.add_argument("--long-kv-types", default="f16,q8", help="longctx part: longattn --kv-type values")
    ap.add_argument("--long-llama", default="f16,f16+fa",
                    help="longctx part: llama.cpp configs, comma list of f16 (its defaults: f16 KV cache, flash "
                         "attention off), f16+fa (flash attention on), q8_0+fa (q8_0 KV cache, flash attention on)")
    ap.add_argument("--longattn-base", default=None,
                    help="longctx part: an older longattn binary timed in the same rounds (an A/B of two builds)")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: check,speed,ppl,longctx")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    for path in (args.model, args.longattn, args.text):
        if not os.path.exists(path):
            sys.exit("llama_cpp_compare: %s not found (make build; scripts/get-model.sh)" % path)
    text = open(args.text, encoding="utf-8").read()
    common = {"model": os.path.basename(args.model), "threads": args.threads}

    if "speed" not in skip:
        # The prompts are cut in llama.cpp's tokens and decoded back to text,
        # so both tools see (nearly) the same token count; each reports its own.
        llm = llama_load(args, 64, False)
        toks = llama_tokens(llm, text)
        if len(toks) < args.pp_tokens:
            sys.exit("llama_cpp_compare: %s has %d tokens, fewer than --pp-tokens" % (args.text, len(toks)))
        prompt_text = llm.detokenize(toks[:args.pp_tokens]).decode("utf-8", "replace")
        gen_prompt_text = llm.detokenize(toks[:16]).decode("utf-8", "replace")
        del llm
        # Same prompt tokens, same greedy tokens expected; small numeric
        # differences may make them part later, hence only a few tokens.
        if "check" not in skip and not check_agreement(args, toks[:16], gen_prompt_text, common):
            print("llama_cpp_compare: the two tools' greedy tokens disagree (see the check line)%s"
                  % ("; going on (--allow-mismatch)" if args.allow_mismatch else ""), file=sys.stderr)
            if not args.allow_mismatch:
                sys.exit(1)
        # The two tools take turns, best of --repeat each: the machine's speed
        # drifts, and turns keep a slow spell from landing on one tool only.
        l_pp = l_tg = a_pp = a_tg = 0.0
        for _ in range(args.repeat):
            pp, tg = llama_speed(args, toks[:args.pp_tokens], toks[:16])
            l_pp, l_tg = max(l_pp, pp), max(l_tg, tg)
            n_pp, pp, n_tg, tg, kv = longattn_speed(args, prompt_text, gen_prompt_text)
            a_pp, a_tg = max(a_pp, pp), max(a_tg, tg)
        emit(tool="llama.cpp", metric="prompt_tps", tokens=args.pp_tokens, value=round(l_pp, 2), **common)
        emit(tool="llama.cpp", metric="generation_tps", tokens=args.tg_tokens, value=round(l_tg, 2), **common)
        emit(tool="longattn", metric="prompt_tps", tokens=n_pp, value=round(a_pp, 2), kv_bytes=kv, **common)
        emit(tool="longattn", metric="generation_tps", tokens=n_tg, value=round(a_tg, 2), **common)
        emit(tool="ratio", metric="prompt_tps", value=round(a_pp / l_pp, 3), **common)
        emit(tool="ratio", metric="generation_tps", value=round(a_tg / l_tg, 3), **common)

    if "longctx" not in skip:
        long_generation(args, text, common)

    if "ppl" not in skip:
        l_ppl, l_err, l_n, l_chunks, l_tps = llama_perplexity(args, text)
        emit(tool="llama.cpp", metric="perplexity", value=round(l_ppl, 4), err=round(l_err, 4), tokens=l_n,
             chunks=l_chunks, ctx=args.ctx, eval_tps=round(l_tps, 2), **common)
        a_ppl, a_err, a_n, a_chunks, a_tps = longattn_perplexity(args)
        emit(tool="longattn", metric="perplexity", value=round(a_ppl, 4), err=round(a_err, 4), tokens=a_n,
             chunks=a_chunks, ctx=args.ctx, eval_tps=round(a_tps, 2), **common)
        emit(tool="ratio", metric="perplexity", value=round(a_ppl / l_ppl, 5),
             rel_diff_percent=round(100 * (a_ppl - l_ppl) / l_ppl, 3), **common)


if __name__ == "__main__":
    main()
