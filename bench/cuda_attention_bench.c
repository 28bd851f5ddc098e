/* longattn_cuda_bench: `longattn bench ... --backend cuda` (tools/bench_gpu.c)
 * as a program of its own, for machines where the CLI is not built (it needs
 * PCRE2 for the model runtime; the GPU machine's image lacks it), with the
 * options scripts/gpu-check.sh and bench/peers_gpu.py pass:
 *
 *   longattn_cuda_bench [--op fwd|fwdbwd|decode|sparse|sparse_fwdbwd] [--heads 16] [--dim 128] [--tokens 16384]
 *                       [--len L]... [--iters 20]
 *
 * fwd / fwdbwd are `bench attention` with --pass fwd / bwd, sparse /
 * sparse_fwdbwd `bench sparse` likewise (without --tokens: batch 1),
 * decode `bench decode` (--dim, --iters and --len only: its heads and
 * batches are fixed); the rows and their timing are bench_gpu.c's. Uses
 * the public API only. */
#include "cli.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    const char *op = "fwd", *H = "16", *D = "128", *tokens = "16384", *iters = "20";
    char lens[256] = "";
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (!strcmp(a, "--op")) op = v;
        else if (!strcmp(a, "--heads")) H = v;
        else if (!strcmp(a, "--dim")) D = v;
        else if (!strcmp(a, "--tokens")) tokens = v;
        else if (!strcmp(a, "--iters")) iters = v;
        else if (!strcmp(a, "--len") && strlen(lens) + strlen(v) + 2 < sizeof lens)
            strcat(strcat(lens, *lens ? "," : ""), v);
        else return fprintf(stderr, "longattn_cuda_bench: unknown option %s\n", a), 2;
    }
    if (argc % 2 == 0) return fprintf(stderr, "longattn_cuda_bench: %s needs a value\n", argv[argc - 1]), 2;
    const bool sparse = !strncmp(op, "sparse", 6), bwd = !strcmp(op, "fwdbwd") || !strcmp(op, "sparse_fwdbwd");
    if (strcmp(op, "fwd") && strcmp(op, "decode") && strcmp(op, "sparse") && !bwd)
        return fprintf(stderr, "longattn_cuda_bench: --op is fwd, fwdbwd, decode, sparse or sparse_fwdbwd\n"), 2;
    /* each bench gets only the options it reads (bench_gpu refuses the
     * others): decode takes --D, --iters and --L; sparse all but --tokens */
    const bool decode = !strcmp(op, "decode");
    char *args[20] = {"longattn_cuda_bench", (char *)(decode ? "decode" : sparse ? "sparse" : "attention"),
                      "--D", (char *)D, "--iters", (char *)iters};
    int n = 6;
    if (!decode) args[n++] = "--pass", args[n++] = (char *)(bwd ? "bwd" : "fwd"), args[n++] = "--H", args[n++] = (char *)H;
    if (!decode && !sparse) args[n++] = "--tokens", args[n++] = (char *)tokens;
    if (*lens) args[n++] = "--L", args[n++] = lens;
    return bench_gpu(n, args);
}
