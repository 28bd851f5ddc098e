/* DuoAttention-style head calibration (include/longattn_model.h,
 * la_duo_calibrate): synthetic retrieval prompts built here (a filler
 * haystack with one "secret code" fact at a grid of depths, then the
 * question and the answer), run with an h2o policy whose budget keeps
 * everything, so its per-entry attention mass is an exact probe; each
 * (layer, KV head) scores the mass that the question and answer tokens put
 * on the fact's tokens, per query row, averaged over prompts. */
#include "longattn_model.h"

#include "base/base.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static const char *const filler[] = {
    "The grass is green and the sky is a calm shade of blue today.",
    "A small boat drifted slowly along the river past the old mill.",
    "Many people enjoy reading a good book on a quiet rainy afternoon.",
    "The market opened early, and the baker sold out of bread by noon.",
    "Mountains in the north stay covered with snow for most of the year.",
    "She planted tomatoes, beans and sunflowers in the garden behind the house.",
    "The train to the coast leaves every hour from the central station.",
    "An old clock in the hallway chimes softly at the start of each hour.",
    "Children played football in the park until the street lights came on.",
    "The library keeps its rarest maps in a cool room on the top floor.",
    "Fresh coffee and warm bread filled the kitchen with a pleasant smell.",
    "Birds gathered on the wires before flying south for the winter.",
};
static const char *const keys[] = {"Lisbon", "Oslo", "Nairobi", "Lima", "Hanoi", "Dublin", "Quito", "Perth"};

la_duo_params la_duo_params_default(void) { return (la_duo_params){.n_prompts = 4, .context = 1024, .seed = 1}; }

static uint64_t next(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Append the tokens of text to *ids (grown). */
static la_status add_text(const la_tokenizer *t, const char *text, bool bos, int32_t **ids, int64_t *n, int64_t *cap) {
    int32_t *part;
    int64_t np;
    la_status st = la_tokenize(t, text, strlen(text), bos, false, &part, &np);
    if (st) return st;
    if (*n + np > *cap) {
        int64_t c = *cap ? *cap : 1024;
        while (c < *n + np) c *= 2;
        int32_t *g = realloc(*ids, sizeof(int32_t) * (size_t)c);
        if (!g) {
            free(part);
            return la_fail(LA_ERR_NOMEM, "la_duo_calibrate: no memory for %lld tokens", (long long)c);
        }
        *ids = g, *cap = c;
    }
    memcpy(*ids + *n, part, sizeof(int32_t) * (size_t)np);
    *n += np;
    free(part);
    return LA_OK;
}

/* One prompt: haystack tokens up to `before`, the fact, the rest of the
 * haystack, then question and answer. Scores += the fact's mass. */
static la_status one_prompt(const la_model *m, la_context *ctx, const la_duo_params *p, int64_t index, uint64_t *rng,
                            double *scores) {
    const la_tokenizer *t = la_model_tokenizer(m);
    const la_model_config *c = la_model_config_of(m);
    int32_t *hay = NULL, *ids = NULL;
    int64_t nh = 0, caph = 0, n = 0, cap = 0;
    la_status st = LA_OK;
    char text[512];
    while (!st && nh < p->context) {
        snprintf(text, sizeof text, " %s", filler[next(rng) % (sizeof filler / sizeof *filler)]);
        st = add_text(t, text, false, &hay, &nh, &caph);
    }
    const char *key = keys[next(rng) % (sizeof keys / sizeof *keys)];
    char code[8];
    snprintf(code, sizeof code, "%07llu", (unsigned long long)(next(rng) % 10000000ull));
    const int64_t before = (int64_t)((double)p->context * ((double)index + 0.5) / (double)p->n_prompts);
    /* bos, haystack [0, before), fact, haystack [before, context), question, answer */
    if (!st && la_tokenizer_add_bos(t) && la_tokenizer_bos(t) >= 0) {
        st = add_text(t, "", true, &ids, &n, &cap);
    }
    if (!st && (n + before > cap)) {
        int32_t *g = realloc(ids, sizeof(int32_t) * (size_t)(n + p->context + 256));
        if (!g) st = la_fail(LA_ERR_NOMEM, "la_duo_calibrate: no memory");
        else ids = g, cap = n + p->context + 256;
    }
    if (!st) memcpy(ids + n, hay, sizeof(int32_t) * (size_t)before), n += before;
    const int64_t fact0 = n;
    snprintf(text, sizeof text, " The secret code for %s is %s.", key, code);
    if (!st) st = add_text(t, text, false, &ids, &n, &cap);
    const int64_t fact1 = n;
    if (!st && n + p->context - before > cap) {
        int32_t *g = realloc(ids, sizeof(int32_t) * (size_t)(n + p->context - before + 256));
        if (!g) st = la_fail(LA_ERR_NOMEM, "la_duo_calibrate: no memory");
        else ids = g, cap = n + p->context - before + 256;
    }
    if (!st) memcpy(ids + n, hay + before, sizeof(int32_t) * (size_t)(p->context - before)), n += p->context - before;
    const int64_t body = n;
    snprintf(text, sizeof text, "\nQuestion: What is the secret code for %s?\nAnswer: The secret code for %s is %s.",
             key, key, code);
    if (!st) st = add_text(t, text, false, &ids, &n, &cap);
    free(hay);
    la_session *s = NULL;
    if (!st) {
        la_session_params sp = la_session_params_default();
        sp.max_ctx = n;
        sp.kv_policy = (la_kv_policy){.kind = LA_KV_POLICY_H2O, .budget = n, .recent = 0};
        st = la_session_new_with(m, ctx, &sp, &s);
    }
    const int64_t L = c->n_layer, Hkv = c->n_head_kv, G = c->n_head / c->n_head_kv, nf = fact1 - fact0;
    double *before_mass = calloc((size_t)(L * Hkv), sizeof(double));
    if (!st && !before_mass) st = la_fail(LA_ERR_NOMEM, "la_duo_calibrate: no memory");
    if (!st && nf <= 0) st = la_fail(LA_ERR_ARGUMENT, "la_duo_calibrate: the fact tokenised to nothing");
    if (!st) st = la_session_eval(s, ids, body, NULL, false);
    for (int pass = 0; pass < 2 && !st; pass++) {
        if (pass == 1) st = la_session_eval(s, ids + body, n - body, NULL, false);
        for (int64_t l = 0; l < L && !st; l++)
            for (int64_t h = 0; h < Hkv && !st; h++) {
                const float *sc;
                int64_t len;
                st = la_kv_policy_state_scores(la_session_kv_policy_state(s), l, h, &sc, &len);
                if (st) break;
                if (len < fact1) {
                    st = la_fail(LA_ERR_ARGUMENT, "la_duo_calibrate: the probe lost entries (%lld held)", (long long)len);
                    break;
                }
                double mass = 0;
                for (int64_t j = fact0; j < fact1; j++) mass += sc[j];
                if (pass == 0) before_mass[l * Hkv + h] = mass;
                else scores[l * Hkv + h] += (mass - before_mass[l * Hkv + h]) / (double)((n - body) * G);
            }
    }
    free(before_mass);
    la_session_free(s);
    free(ids);
    return st;
}

la_status la_duo_calibrate(const la_model *m, la_context *ctx, const la_duo_params *p, float *scores) {
    if (!m || !ctx || !p || !scores)
        return la_fail(LA_ERR_NULL, "la_duo_calibrate: %s is NULL", !m ? "model" : !ctx ? "ctx" : !p ? "params" : "scores");
    if (p->n_prompts < 1 || p->n_prompts > 4096 || p->context < 16 || p->context > (1 << 24))
        return la_fail(LA_ERR_ARGUMENT, "la_duo_calibrate: n_prompts %lld must be in [1, 4096], context %lld in [16, 2^24]",
                       (long long)p->n_prompts, (long long)p->context);
    const la_model_config *c = la_model_config_of(m);
    const int64_t n = c->n_layer * c->n_head_kv;
    double *acc = calloc((size_t)n, sizeof(double));
    if (!acc) return la_fail(LA_ERR_NOMEM, "la_duo_calibrate: no memory");
    uint64_t rng = p->seed;
    la_status st = LA_OK;
    for (int64_t i = 0; i < p->n_prompts && !st; i++) st = one_prompt(m, ctx, p, i, &rng, acc);
    if (!st)
        for (int64_t i = 0; i < n; i++) scores[i] = (float)(acc[i] / (double)p->n_prompts);
    free(acc);
    return st ? st : la_succeed();
}

la_status la_duo_scores_write(const char *path, const float *scores, int64_t n_layers, int64_t n_kv_heads) {
    if (!path || !scores) return la_fail(LA_ERR_NULL, "la_duo_scores_write: %s is NULL", !path ? "path" : "scores");
    if (n_layers < 1 || n_kv_heads < 1 || n_layers > (1 << 20) || n_kv_heads > (1 << 20))
        return la_fail(LA_ERR_ARGUMENT, "la_duo_scores_write: %lld layers x %lld KV heads", (long long)n_layers,
                       (long long)n_kv_heads);
    /* the duo policy's reader refuses what is not finite: such a file is not written */
    for (int64_t i = 0; i < n_layers * n_kv_heads; i++)
        if (!isfinite(scores[i]))
            return la_fail(LA_ERR_ARGUMENT, "la_duo_scores_write: scores[%lld] (layer %lld, KV head %lld) is %g; "
                           "scores must be finite", (long long)i, (long long)(i / n_kv_heads),
                           (long long)(i % n_kv_heads), (double)scores[i]);
    FILE *f = fopen(path, "w");
    if (!f) return la_fail(LA_ERR_IO, "la_duo_scores_write: cannot create '%s'", path);
    fprintf(f, "# DuoAttention-style head scores (longattn calibrate-duo): per layer, each KV head's attention\n"
               "# mass on a retrieved fact; the highest keep the full cache under --kv duo:BUDGET:FILE\n");
    fprintf(f, "longattn-duo-scores 1 %lld %lld\n", (long long)n_layers, (long long)n_kv_heads);
    for (int64_t l = 0; l < n_layers; l++)
        for (int64_t h = 0; h < n_kv_heads; h++)
            fprintf(f, "%.9g%c", (double)scores[l * n_kv_heads + h], h + 1 == n_kv_heads ? '\n' : ' ');
    const bool ok = !ferror(f);
    if (fclose(f) || !ok) return la_fail(LA_ERR_IO, "la_duo_scores_write: writing '%s' failed", path);
    return la_succeed();
}
