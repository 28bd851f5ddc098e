/* DuoAttention-style calibration (src/model/duo.c, la_duo_calibrate) on a
 * tiny model written here whose one retrieval head is planted: a byte-level
 * SentencePiece vocabulary (every character its own <0xXX> token), token
 * embeddings with a constant channel and a channel that is set only for
 * digits (the calibration's filler has none; its fact and answer have
 * seven), and in layer 1 one KV head whose queries read the constant
 * channel and whose keys read the digit channel, on the RoPE pair that
 * barely rotates: its queries put nearly all their mass on digits, so on
 * the fact's code. That (layer, head) must get the top score, well above
 * every other; scores must differ between heads and lie in [0, 1]; the
 * score file must round-trip through the duo policy (the planted head is
 * the retrieval head at the smallest share); bad calls each give their
 * status and a message. */
#include "gguf_writer.h"
#include "longattn_model.h"
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { V = 259, E = 64, LAYERS = 2, H = 4, HKV = 2, D = E / H, F = 64, PLANT_L = 1, PLANT_H = 1 };

/* rows x cols f32 of uniform values with standard deviation std */
static float *put(uint64_t *rng, int64_t rows, int64_t cols, double std) {
    float *m = tu_alloc(sizeof(float) * (size_t)(rows * cols));
    const double hw = std * sqrt(3.0);
    for (int64_t i = 0; i < rows * cols; i++) m[i] = (float)tu_uniform(rng, -hw, hw);
    return m;
}

/* Add m (rows x cols; a vector when rows is 1) to the file; freed later. */
static void emit(gguf_writer *w, const char *name, float *m, int64_t rows, int64_t cols, void **keep, int *nk) {
    gw_tensor(w, name, 0 /* F32 */, rows > 1 ? 2 : 1, (int64_t[]){cols, rows}, m,
              sizeof(float) * (size_t)(rows * cols));
    keep[(*nk)++] = m;
}

static void build(const char *path, uint64_t *rng) {
    static char bytes[256][8];
    const char *toks[V];
    float scores[V];
    int32_t types[V];
    int n = 0;
    toks[n] = "<unk>", scores[n] = 0, types[n++] = 2;
    toks[n] = "<s>", scores[n] = 0, types[n++] = 3;
    toks[n] = "</s>", scores[n] = 0, types[n++] = 3;
    for (int b = 0; b < 256; b++) {
        snprintf(bytes[b], sizeof bytes[b], "<0x%02X>", b);
        toks[n] = bytes[b], scores[n] = 0, types[n++] = 6;
    }
    gguf_writer *w = gw_new(3, 0);
    gw_kv_str(w, "general.architecture", "llama");
    gw_kv_u32(w, "llama.embedding_length", E);
    gw_kv_u32(w, "llama.block_count", LAYERS);
    gw_kv_u32(w, "llama.feed_forward_length", F);
    gw_kv_u32(w, "llama.attention.head_count", H);
    gw_kv_u32(w, "llama.attention.head_count_kv", HKV);
    gw_kv_u32(w, "llama.context_length", 4096);
    gw_kv_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    gw_kv_f32(w, "llama.rope.freq_base", 1e6f);
    gw_kv_str(w, "tokenizer.ggml.model", "llama");
    gw_kv_arr_str(w, "tokenizer.ggml.tokens", toks, V);
    gw_kv_arr_f32(w, "tokenizer.ggml.scores", scores, V);
    gw_kv_arr_i32(w, "tokenizer.ggml.token_type", types, V);
    gw_kv_u32(w, "tokenizer.ggml.bos_token_id", 1);
    gw_kv_u32(w, "tokenizer.ggml.eos_token_id", 2);
    void *keep[64];
    int nk = 0;
    char name[64];
    /* embeddings: channel 0 constant, channel 1 the digit indicator, the rest random */
    float *emb = put(rng, V, E, 0.5);
    for (int t = 0; t < V; t++) {
        const int byte = t - 3;
        emb[t * E + 0] = 4;
        emb[t * E + 1] = byte >= '0' && byte <= '9' ? 4.0f : 0.0f;
    }
    emit(w, "token_embd.weight", emb, V, E, keep, &nk);
    float *on = put(rng, 1, E, 0);
    for (int i = 0; i < E; i++) on[i] = 1;
    emit(w, "output_norm.weight", on, 1, E, keep, &nk);
    const double in_e = 1 / sqrt((double)E);
    for (int l = 0; l < LAYERS; l++) {
#define NM(x) (snprintf(name, sizeof name, "blk.%d." x, l), name)
        float *an = put(rng, 1, E, 0), *fn = put(rng, 1, E, 0);
        for (int i = 0; i < E; i++) an[i] = fn[i] = 1;
        emit(w, NM("attn_norm.weight"), an, 1, E, keep, &nk);
        emit(w, NM("ffn_norm.weight"), fn, 1, E, keep, &nk);
        float *wq = put(rng, E, E, 2 * in_e), *wk = put(rng, HKV * D, E, 2 * in_e);
        float *wv = put(rng, HKV * D, E, in_e), *wo = put(rng, E, E, in_e);
        float *gate = put(rng, F, E, in_e), *up = put(rng, F, E, in_e);
        float *down = put(rng, E, F, 1 / sqrt((double)F));
        /* no head but the planted one reads the digit channel in its keys */
        for (int r = 0; r < HKV * D; r++) wk[r * E + 1] = 0;
        /* channels 0 and 1 pass through every layer unchanged */
        for (int c = 0; c < E; c++) wo[0 * E + c] = wo[1 * E + c] = 0;
        for (int c = 0; c < F; c++) down[0 * F + c] = down[1 * F + c] = 0;
        if (l == PLANT_L) {
            /* query heads of KV head PLANT_H: q[14] = 1.5 x channel 0; its key: k[14] = 1.5 x channel 1;
             * every other row of those heads 0. Pair (14, 15) turns by 1e6^(-14/16) rad a position. */
            const int G = H / HKV;
            for (int g = 0; g < G; g++)
                for (int d = 0; d < D; d++)
                    for (int c = 0; c < E; c++) wq[((PLANT_H * G + g) * D + d) * E + c] = 0;
            for (int d = 0; d < D; d++)
                for (int c = 0; c < E; c++) wk[(PLANT_H * D + d) * E + c] = 0;
            for (int g = 0; g < G; g++) wq[((PLANT_H * G + g) * D + 14) * E + 0] = 1.5f;
            wk[(PLANT_H * D + 14) * E + 1] = 1.5f;
        }
        emit(w, NM("attn_q.weight"), wq, E, E, keep, &nk);
        emit(w, NM("attn_k.weight"), wk, HKV * D, E, keep, &nk);
        emit(w, NM("attn_v.weight"), wv, HKV * D, E, keep, &nk);
        emit(w, NM("attn_output.weight"), wo, E, E, keep, &nk);
        emit(w, NM("ffn_gate.weight"), gate, F, E, keep, &nk);
        emit(w, NM("ffn_up.weight"), up, F, E, keep, &nk);
        emit(w, NM("ffn_down.weight"), down, E, F, keep, &nk);
#undef NM
    }
    tu_check(gw_write_file(w, path) == 0, "writing %s failed", path);
    gw_free(w);
    for (int i = 0; i < nk; i++) free(keep[i]);
}

int main(void) {
    const char *qe = getenv("LONGATTN_TEST_QUICK");
    const bool quick = qe && *qe && *qe != '0';
    uint64_t rng = tu_seed();
    char path[64] = "/tmp/longattn-duo-model-XXXXXX";
    const int fd = mkstemp(path);
    tu_check(fd >= 0, "mkstemp failed");
    if (fd < 0) return tu_finish();
    close(fd);
    build(path, &rng);
    la_model *m = NULL;
    la_context *ctx = NULL;
    TU_EXPECT_STATUS(la_model_load(path, &m), LA_OK);
    TU_EXPECT_STATUS(la_context_create(&ctx, 2), LA_OK);
    if (!m || !ctx) return tu_finish();
    la_duo_params dp = la_duo_params_default();
    dp.n_prompts = quick ? 2 : 3, dp.context = quick ? 160 : 400, dp.seed = tu_next(&rng);
    float sc[LAYERS * HKV];
    tu_poison(sc, LA_F32, LAYERS * HKV);
    TU_EXPECT_STATUS(la_duo_calibrate(m, ctx, &dp, sc), LA_OK);
    const int plant = PLANT_L * HKV + PLANT_H;
    int best = 0;
    double runner_up = -1, lo = INFINITY, hi = -INFINITY;
    bool in_range = true;
    for (int i = 0; i < LAYERS * HKV; i++) {
        in_range &= sc[i] >= 0 && sc[i] <= 1 + 1e-6;
        if (sc[i] > sc[best]) best = i;
        lo = fmin(lo, sc[i]), hi = fmax(hi, sc[i]);
        if (i != plant) runner_up = fmax(runner_up, sc[i]);
    }
    printf("scores (seed of the prompts %llu):", (unsigned long long)dp.seed);
    for (int i = 0; i < LAYERS * HKV; i++) printf(" %.4f", (double)sc[i]);
    printf("\n");
    tu_check(in_range, "duo scores outside [0, 1]");
    tu_check(best == plant, "the planted retrieval head (layer %d, head %d) scored %.4f; head %d scored more (%.4f)",
             PLANT_L, PLANT_H, (double)sc[plant], best, (double)sc[best]);
    /* the planted head's queries put ~all their mass on the digits, the
     * fact's seven among at most fourteen: above 0.3; the others spread.
     * Margin 0.2: over 270 seeds the planted head led the runner-up by
     * 0.38 at least (quick: 2 prompts of 160 tokens) and 0.35 (3 of 400);
     * the former ratio test (3x the runner-up) failed on 8 of 150 seeds in
     * quick mode (CI's seed 242744757826334: 0.75 against 0.27; the short
     * prompts let a random head reach 0.38). */
    tu_check(sc[plant] > 0.3 && sc[plant] - runner_up > 0.2, "planted head %.4f not well above the rest (%.4f)",
             (double)sc[plant], runner_up);
    tu_check(hi - lo > 0.1, "duo scores barely differ between heads (%.4f to %.4f)", lo, hi);
    /* the same seed gives the same scores */
    float again[LAYERS * HKV];
    TU_EXPECT_STATUS(la_duo_calibrate(m, ctx, &dp, again), LA_OK);
    tu_check(!memcmp(sc, again, sizeof sc), "duo calibration is not reproducible");

    /* the score file, read back by the duo policy: at share 1/4 the planted head alone keeps everything */
    char spath[64] = "/tmp/longattn-duo-scores-XXXXXX", spec[160];
    const int sfd = mkstemp(spath);
    tu_check(sfd >= 0, "mkstemp failed");
    if (sfd >= 0) close(sfd);
    TU_EXPECT_STATUS(la_duo_scores_write(spath, sc, LAYERS, HKV), LA_OK);
    snprintf(spec, sizeof spec, "duo:16:share=0.25:%s", spath);
    la_kv_policy pol;
    TU_EXPECT_STATUS(la_kv_policy_parse(spec, &pol), LA_OK);
    la_kv_cache_params cp = la_kv_cache_params_default();
    cp.n_layers = LAYERS, cp.n_kv_heads = HKV, cp.head_dim = D, cp.max_tokens = 64;
    la_kv_cache *c = NULL;
    la_kv_policy_state *s = NULL;
    TU_EXPECT_STATUS(la_kv_cache_create(&cp, &c), LA_OK);
    TU_EXPECT_STATUS(la_kv_policy_state_create(&pol, c, &s), LA_OK);
    int n_ret = 0;
    for (int l = 0; l < LAYERS; l++)
        for (int h = 0; h < HKV; h++) n_ret += la_kv_policy_state_is_retrieval(s, l, h);
    tu_check(n_ret == 1 && la_kv_policy_state_is_retrieval(s, PLANT_L, PLANT_H),
             "the score file did not make the planted head the one retrieval head (%d retrieval heads)", n_ret);
    la_kv_policy_state_destroy(s);
    /* a score file for other dimensions is refused when the policy starts */
    TU_EXPECT_STATUS(la_duo_scores_write(spath, sc, LAYERS * HKV, 1), LA_OK);
    s = NULL;
    TU_EXPECT_STATUS(la_kv_policy_state_create(&pol, c, &s), LA_ERR_FORMAT);
    tu_check(!s && strstr(la_last_error(), "layers x") != NULL, "wrong-dimension score file: '%s'", la_last_error());
    /* a directory as the score file: it said "'/tmp' holds 0 scores" (LA_ERR_FORMAT) */
    la_kv_policy dir_pol;
    TU_EXPECT_STATUS(la_kv_policy_parse("duo:16:share=0.25:/tmp", &dir_pol), LA_OK);
    TU_EXPECT_STATUS(la_kv_policy_state_create(&dir_pol, c, &s), LA_ERR_IO);
    tu_check(!s && strstr(la_last_error(), "cannot read the score file '/tmp'") != NULL, "a directory: '%s'",
             la_last_error());
    la_kv_cache_destroy(c);
    unlink(spath);

    /* bad calls: status and message */
    TU_EXPECT_STATUS(la_duo_calibrate(NULL, ctx, &dp, sc), LA_ERR_NULL);
    tu_check(strstr(la_last_error(), "model is NULL") != NULL, "NULL model: '%s'", la_last_error());
    TU_EXPECT_STATUS(la_duo_calibrate(m, ctx, &dp, NULL), LA_ERR_NULL);
    tu_check(strstr(la_last_error(), "scores is NULL") != NULL, "NULL scores: '%s'", la_last_error());
    la_duo_params bad = dp;
    bad.n_prompts = 0;
    TU_EXPECT_STATUS(la_duo_calibrate(m, ctx, &bad, sc), LA_ERR_ARGUMENT);
    tu_check(strstr(la_last_error(), "n_prompts 0") != NULL, "n_prompts 0: '%s'", la_last_error());
    bad = dp, bad.context = 15;
    TU_EXPECT_STATUS(la_duo_calibrate(m, ctx, &bad, sc), LA_ERR_ARGUMENT);
    tu_check(strstr(la_last_error(), "context 15") != NULL, "context 15: '%s'", la_last_error());
    TU_EXPECT_STATUS(la_duo_scores_write("/nonexistent-dir/x/scores.txt", sc, LAYERS, HKV), LA_ERR_IO);
    tu_check(strstr(la_last_error(), "cannot create") != NULL, "unwritable score file: '%s'", la_last_error());
    TU_EXPECT_STATUS(la_duo_scores_write(spath, sc, 0, HKV), LA_ERR_ARGUMENT);
    tu_check(strstr(la_last_error(), "0 layers") != NULL, "0 layers: '%s'", la_last_error());
    TU_EXPECT_STATUS(la_duo_scores_write(NULL, sc, LAYERS, HKV), LA_ERR_NULL);
    tu_check(strstr(la_last_error(), "path is NULL") != NULL, "NULL path: '%s'", la_last_error());

    la_context_destroy(ctx);
    la_model_free(m);
    unlink(path);
    return tu_finish();
}
