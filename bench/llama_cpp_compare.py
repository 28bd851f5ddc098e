#!/usr/bin/env python3
"""longattn vs llama.cpp on the same GGUF model, on the CPU.

Measures, for both, with the same thread count:
  - prompt processing: a prompt of --pp-tokens tokens (tokens/s),
  - generation: --tg-tokens greedy tokens after a short prompt (tokens/s),
  - perplexity over --text, computed as llama.cpp's perplexity tool does
    (non-overlapping chunks of --ctx tokens, second half of each scored);
  - long-context generation (part `longctx`): --long-tg greedy tokens after
    a prompt of --long-ctx tokens, llama.cpp with its defaults (f16 KV cache,
    flash attention off) against longattn with each --long-kv-types cache,
    with the bytes each step reads (weights + KV cache in use).

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


def llama_long_generation(args, prompt_tokens):
    """Generation tokens/s over --long-tg greedy steps after prompt_tokens,
    and the f16 KV bytes those steps read (every layer's K and V rows of the
    tokens in the cache; llama.cpp's default cache type)."""
    llm = llama_load(args, len(prompt_tokens) + args.long_tg + 16, False)
    llm.eval(prompt_tokens)
    spent = 0.0
    for _ in range(args.long_tg):
        tok = llama_greedy(llm)
        t0 = time.perf_counter()
        llm.eval([tok])
        spent += time.perf_counter() - t0
    md = llm.metadata
    arch = md.get("general.architecture", "llama")
    layers = int(md["%s.block_count" % arch])
    heads = int(md["%s.attention.head_count" % arch])
    kv_heads = int(md.get("%s.attention.head_count_kv" % arch, heads))
    head_dim = int(md.get("%s.attention.key_length" % arch, int(md["%s.embedding_length" % arch]) // heads))
    tokens = len(prompt_tokens) + args.long_tg // 2  # the cache's mean length over the timed steps
    del llm
    return args.long_tg / spent, layers * kv_heads * head_dim * 2 * 2 * tokens


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


def longattn_run(args, prompt_text, n_gen, extra=(), ctx=None):
    """(prompt tokens, prompt tokens/s, forward passes, generation tokens/s,
    KV-cache bytes, generated bytes)."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write(prompt_text)
        path = f.name
    try:
        cmd = [args.longattn, "run", "-m", args.model, "-f", path, "--raw", "-n", str(n_gen), "--temp", "0",
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


def long_generation(args, text, common):
    """Generation at a long context: llama.cpp (f16 cache) and longattn with
    each --long-kv-types cache take turns, best of --repeat each. Bytes per
    step: the weights (the GGUF file's size, every weight read once per
    token) plus the KV cache in use (longattn's own count at the end of the
    run; llama.cpp's computed from the model's shape)."""
    llm = llama_load(args, 64, False)
    toks = llama_tokens(llm, text)
    del llm
    if len(toks) < args.long_ctx:
        sys.exit("llama_cpp_compare: %s has %d tokens, fewer than --long-ctx" % (args.text, len(toks)))
    prompt = toks[:args.long_ctx]
    llm = llama_load(args, 64, False)
    prompt_text = llm.detokenize(prompt).decode("utf-8", "replace")
    del llm
    weights = os.path.getsize(args.model)
    kv_types = [t for t in args.long_kv_types.split(",") if t]
    best_l, l_kv, best_a, a_kv = 0.0, 0, {}, {}
    ctx = args.long_ctx + args.long_tg + 256
    for _ in range(args.repeat):
        tps, l_kv = llama_long_generation(args, prompt)
        best_l = max(best_l, tps)
        for t in kv_types:
            _, _, _, tps, kv, _ = longattn_run(args, prompt_text, args.long_tg + 1, ("--kv-type", t), ctx)
            best_a[t], a_kv[t] = max(best_a.get(t, 0.0), tps), kv
    emit(tool="llama.cpp", metric="long_generation_tps", kv_type="f16", ctx=args.long_ctx, tokens=args.long_tg,
         value=round(best_l, 2), kv_bytes=l_kv, bytes_per_token=weights + l_kv, **common)
    for t in kv_types:
        emit(tool="longattn", metric="long_generation_tps", kv_type=t, ctx=args.long_ctx, tokens=args.long_tg,
             value=round(best_a[t], 2), kv_bytes=a_kv[t], bytes_per_token=weights + a_kv[t], **common)
        emit(tool="ratio", metric="long_generation_tps", kv_type=t, value=round(best_a[t] / best_l, 3), **common)


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
