/* longattn calibrate-duo: score every (layer, KV head) of a model for the
 * duo KV policy (la_duo_calibrate) and write the score file it reads. */
#include "cli.h"
#include "cli_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CMD "longattn calibrate-duo"

static void usage(FILE *f) {
    fprintf(f, "usage: longattn calibrate-duo -m MODEL.gguf [-o FILE] [--prompts N] [--ctx N] [--seed N] [--threads N]\n"
               "  -o FILE       score file to write (default " LA_KV_DUO_SCORES_DEFAULT "); use it with\n"
               "                --kv duo:BUDGET:FILE on run, ppl and eval\n"
               "  --prompts N   synthetic retrieval prompts (default 4)\n"
               "  --ctx N       haystack tokens per prompt (default 1024; one whose f16 KV cache would not fit\n"
               "                in physical memory is refused; past the model's trained context it runs\n"
               "                with a warning, as run's --ctx)\n"
               "  --seed N      picks the filler, key and digits (default 1)\n"
               "  --threads N   CPU threads, 1 to 4096 (default: OMP_NUM_THREADS or all cores)\n");
}

int cmd_calibrate_duo(int argc, char **argv) {
    const char *model_path = NULL, *out = LA_KV_DUO_SCORES_DEFAULT;
    int64_t threads = 0;
    la_duo_params dp = la_duo_params_default();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        static const char *const value_options[] = {"-m", "-o", "--prompts", "--ctx", "--seed", "--threads", NULL};
        if (!(v = cli_option_value(CMD, argc, argv, &i, value_options))) return 2;
        if (!strcmp(a, "-m")) {
            if (!cli_parse_path(CMD, a, v)) return 2; /* as -o "": it was "cannot open ''", exit 1 */
            model_path = v;
        }
        else if (!strcmp(a, "-o")) {
            if (!cli_parse_path(CMD, a, v)) return 2;
            out = v;
        }
        else if (!strcmp(a, "--prompts")) {
            if (!cli_parse_i64(CMD, a, v, 1, 4096, &dp.n_prompts)) return 2;
        } else if (!strcmp(a, "--ctx")) {
            if (!cli_parse_i64(CMD, a, v, 16, 1 << 24, &dp.context)) return 2;
        } else if (!strcmp(a, "--seed")) {
            if (!cli_parse_u64(CMD, a, v, &dp.seed)) return 2;
        } else if (!strcmp(a, "--threads")) {
            if (!cli_parse_threads(CMD, v, &threads)) return 2;
        } else {
            fprintf(stderr, "%s: unknown option '%s'\n", CMD, a);
            usage(stderr);
            return 2;
        }
    }
    if (!model_path) {
        fprintf(stderr, "%s: -m is required\n", CMD);
        usage(stderr);
        return 2;
    }
    if (!cli_default_threads(CMD, &threads)) return 2;
    if (!cli_output_ok(CMD, "-o", out, false)) return 1; /* before the calibration, not after it */
    la_model *m = NULL;
    la_context *ctx = NULL;
    float *scores = NULL;
    int rc = 0;
    la_status st;
    if ((st = la_model_load(model_path, &m))) {
        rc = cli_fail(CMD, model_path, st);
        goto done;
    }
    if ((st = la_context_create(&ctx, (int)threads))) {
        rc = cli_fail(CMD, "context", st);
        goto done;
    }
    const la_model_config *c = la_model_config_of(m);
    /* a haystack whose cache cannot fit in memory is refused before it is
     * built (--ctx 16777216 built and ran one for hours): the calibration
     * holds each prompt's whole cache, f16, and its tokens */
    const double token_bytes = cli_kv_bytes_per_token(c, LA_F16, LA_KV_QUANT_NONE) + CLI_PROMPT_TOKEN_BYTES;
    if (!cli_fits_memory(CMD, "--ctx", dp.context, token_bytes * (double)dp.context,
                         "the f16 KV cache and the prompt")) {
        rc = 2;
        goto done;
    }
    /* a haystack past the trained context is calibrated, with a warning (as run, ppl and eval) */
    cli_model_ctx(CMD, "--ctx", dp.context, c);
    scores = malloc(sizeof(float) * (size_t)(c->n_layer * c->n_head_kv));
    if (!scores) {
        fprintf(stderr, "%s: out of memory\n", CMD);
        rc = 1;
        goto done;
    }
    if ((st = la_duo_calibrate(m, ctx, &dp, scores))) {
        rc = cli_fail(CMD, "calibrating", st);
        goto done;
    }
    if ((st = la_duo_scores_write(out, scores, c->n_layer, c->n_head_kv))) {
        rc = cli_fail(CMD, out, st);
        goto done;
    }
    for (int64_t l = 0; l < c->n_layer; l++) {
        printf("layer %2lld:", (long long)l);
        for (int64_t h = 0; h < c->n_head_kv; h++) printf(" %.4f", (double)scores[l * c->n_head_kv + h]);
        printf("\n");
    }
    printf("wrote %s (%lld layers x %lld KV heads)\n", out, (long long)c->n_layer, (long long)c->n_head_kv);
done:
    free(scores);
    la_context_destroy(ctx);
    la_model_free(m);
    return rc;
}
