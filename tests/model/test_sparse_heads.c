/* Per-head coverage for the sparse prefill (src/model/sparse_heads.c):
 * - head-by-head selection with gamma[h] gives, for each head, exactly the
 *   lists la_sparse_select_topk gives that head at gamma[h] over all heads
 *   (so with one gamma everywhere, exactly its index), a valid index;
 * - the calibration's coverages come from the ladder, keep the heads' mean
 *   uncovered share within 1 - target, put every head at the top at
 *   target 0.999 and leave the dense layers at the target;
 * - coverage 0 makes a streaming head: static's sink and local lists;
 * - the streaming split puts the lowest-scored share at 0;
 * - the coverage file round-trips, and bad files, targets and choices are
 *   rejected with their status.
 * Random q and k of awkward shapes (rows not a multiple of the block,
 * GQA, keys past the queries), fresh each run. */
#include "longattn_model.h"
#include "model/sparse_heads.h"
#include "select_check.h"
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { H = 6, HKV = 2, D = 16 };

static la_tensor make(uint64_t *rng, int64_t L, int64_t heads) {
    la_tensor t = la_tensor_contiguous(tu_alloc(sizeof(float) * (size_t)(L * heads * D)), LA_F32, 4,
                                       (int64_t[]){1, L, heads, D});
    /* scale 2: peaked rows, so coverage choices differ between heads and gammas */
    tu_fill(rng, t.data, LA_F32, L * heads * D, -2, 2);
    return t;
}

static void check_select(la_context *ctx, uint64_t *rng) {
    const int64_t n = 64 * 3 + 37, L = n + 130; /* queries last of the keys, partial blocks */
    la_tensor q = make(rng, n, H), k = make(rng, L, HKV);
    la_attention_params p = la_attention_params_default();
    p.causal = 1;
    la_sparse_choice c;
    tu_check(!la_sparse_choice_parse("topk:0.9,probe=4", &c), "parse: %s", la_last_error());
    const float gam[H] = {0.5f, 0.9f, 0.99f, 1.0f, 0.7f, 0.95f};
    la_block_index x;
    la_status st = la_model_select_heads(ctx, &c, gam, &p, &q, &k, &x);
    tu_check(!st, "per-head select: %s", la_last_error());
    if (st) return;
    tu_check(!la_block_index_check(&x, 1, H, n, L), "per-head index valid: %s", la_last_error());
    for (int64_t h = 0; h < H; h++) {
        la_sparse_topk o = la_sparse_topk_default();
        o.gamma = gam[h], o.probe_rows = 4;
        la_block_index y;
        if (la_sparse_select_topk(ctx, &o, &p, &q, &k, &y)) {
            tu_check(false, "topk at %g: %s", (double)gam[h], la_last_error());
            continue;
        }
        tu_check(sc_same_head(&x, &y, h), "head %lld: per-head lists equal topk's at gamma %g", (long long)h,
                 (double)gam[h]);
        la_block_index_free(&y);
    }
    la_block_index_free(&x);
    /* coverage 0: streaming heads, exactly static's sink and local blocks
     * under the choice's options; the other heads still topk's */
    const char *opts[] = {"topk:0.9,probe=4", "topk:0.9,probe=4,sink=2,local=3"};
    for (int oi = 0; oi < 2; oi++) {
        tu_check(!la_sparse_choice_parse(opts[oi], &c), "parse: %s", la_last_error());
        const float gz[H] = {0, 0.9f, 0, 0.99f, 0, 0};
        if ((st = la_model_select_heads(ctx, &c, gz, &p, &q, &k, &x))) {
            tu_check(false, "per-head select with streaming heads: %s", la_last_error());
            continue;
        }
        tu_check(!la_block_index_check(&x, 1, H, n, L), "index with streaming heads valid: %s", la_last_error());
        la_sparse_static so = la_sparse_static_default();
        so.sink_blocks = oi ? 2 : 1, so.local_blocks = oi ? 3 : 1;
        la_sparse_topk o = la_sparse_topk_default();
        o.probe_rows = 4, o.sink_blocks = so.sink_blocks, o.local_blocks = so.local_blocks;
        la_block_index ys, yt;
        tu_check(!la_sparse_select_static(&so, &p, &q, &k, &ys), "static: %s", la_last_error());
        for (int64_t h = 0; h < H; h++) {
            if (gz[h] == 0) {
                tu_check(sc_same_head(&x, &ys, h), "%s head %lld: streaming lists equal static's", opts[oi], (long long)h);
                continue;
            }
            o.gamma = gz[h];
            tu_check(!la_sparse_select_topk(ctx, &o, &p, &q, &k, &yt), "topk: %s", la_last_error());
            tu_check(sc_same_head(&x, &yt, h), "%s head %lld: topk lists beside streaming heads", opts[oi], (long long)h);
            la_block_index_free(&yt);
        }
        la_block_index_free(&ys);
        la_block_index_free(&x);
    }
    free(q.data), free(k.data);
}

/* The streaming split: the lowest-scored share of the sparse layers' heads
 * at 0, the rest (and the dense layers) at gamma; bad arguments rejected. */
static void check_split(uint64_t *rng) {
    enum { NL = 5, NH = 7, DL = 2 };
    double sc[NL * NH];
    float g[NL * NH];
    for (int i = 0; i < NL * NH; i++) sc[i] = tu_uniform(rng, 0, 1);
    sc[DL * NH + 3] = sc[DL * NH + 4]; /* a tie */
    sc[0] = -1;                        /* a dense layer's score is not read */
    const double shares[] = {0, 0.3, 0.5, 1};
    for (int si = 0; si < 4; si++) {
        tu_check(!la_sparse_heads_split(sc, NL, NH, DL, shares[si], 0.99f, g), "split %g: %s", shares[si],
                 la_last_error());
        const int want = (int)floor(shares[si] * (NL - DL) * NH);
        int zeros = 0;
        double worst_zero = -1, best_kept = 2;
        for (int i = 0; i < NL * NH; i++) {
            tu_check(g[i] == 0 || g[i] == 0.99f, "split %g: value %d is 0 or gamma", shares[si], i);
            if (i < DL * NH) tu_check(g[i] == 0.99f, "split %g: dense layer head %d at gamma", shares[si], i);
            if (g[i] == 0) zeros++, worst_zero = fmax(worst_zero, sc[i]);
            else if (i >= DL * NH) best_kept = fmin(best_kept, sc[i]);
        }
        tu_check(zeros == want, "split %g: %d streaming heads, want %d", shares[si], zeros, want);
        tu_check(worst_zero <= best_kept, "split %g: the streaming heads are the lowest scored", shares[si]);
    }
    tu_check(la_sparse_heads_split(NULL, NL, NH, DL, 0.5, 0.9f, g) == LA_ERR_NULL, "NULL scores rejected");
    tu_check(la_sparse_heads_split(sc, NL, NH, DL, 0.5, 0.9f, NULL) == LA_ERR_NULL, "NULL out rejected");
    tu_check(la_sparse_heads_split(sc, NL, NH, DL, 1.5, 0.9f, g) == LA_ERR_ARGUMENT, "share 1.5 rejected");
    tu_check(la_sparse_heads_split(sc, NL, NH, DL, -0.1, 0.9f, g) == LA_ERR_ARGUMENT, "share -0.1 rejected");
    tu_check(la_sparse_heads_split(sc, NL, NH, DL, NAN, 0.9f, g) == LA_ERR_ARGUMENT, "share nan rejected");
    tu_check(la_sparse_heads_split(sc, NL, NH, DL, 0.5, 0, g) == LA_ERR_ARGUMENT, "gamma 0 rejected");
    tu_check(la_sparse_heads_split(sc, NL, NH, DL, 0.5, 1.5f, g) == LA_ERR_ARGUMENT, "gamma 1.5 rejected");
    tu_check(la_sparse_heads_split(sc, NL, NH, NL + 1, 0.5, 0.9f, g) == LA_ERR_ARGUMENT, "dense_layers > n_layer");
    tu_check(la_sparse_heads_split(sc, 0, NH, 0, 0.5, 0.9f, g) == LA_ERR_ARGUMENT, "0 layers rejected");
    tu_check(la_sparse_heads_split(sc, NL, NH, 0, 0.5, 0.9f, g) == LA_ERR_ARGUMENT, "a negative score rejected");
    sc[0] = 0, sc[NH * DL + 1] = INFINITY;
    tu_check(la_sparse_heads_split(sc, NL, NH, DL, 0.5, 0.9f, g) == LA_ERR_ARGUMENT, "an infinite score rejected");
}

static void check_calibration(la_context *ctx, uint64_t *rng) {
    la_sparse_choice c;
    tu_check(!la_sparse_choice_parse("topk:0.99,probe=2,dense-layers=1", &c), "parse: %s", la_last_error());
    const int64_t layers = 3;
    la_sparse_calib *cal;
    if (la_sparse_calibrate_new(ctx, &c, layers, H, &cal)) {
        tu_check(false, "calibrate_new: %s", la_last_error());
        return;
    }
    for (int64_t l = 0; l < layers; l++)
        for (int rep = 0; rep < 2; rep++) {
            const int64_t n = 100 + 64 * rep, L = n + 200 * rep;
            la_tensor q = make(rng, n, H), k = make(rng, L, HKV);
            la_sparse_calibrate_observe(cal, l, &q, &k);
            free(q.data), free(k.data);
        }
    static const float ladder[] = {0.9f, 0.95f, 0.98f, 0.99f, 0.995f, 0.998f, 0.999f};
    const double targets[] = {0.9, 0.98, 0.995, 0.999};
    float g[3 * H];
    for (int t = 0; t < 4; t++) {
        la_status st = la_sparse_calibrate_finish(cal, targets[t], g);
        tu_check(!st, "finish at %g: %s", targets[t], la_last_error());
        if (st) continue;
        double lost = 0;
        for (int64_t h = 0; h < H; h++) tu_check(g[h] == (float)targets[t], "dense layer 0 keeps the target");
        for (int64_t i = H; i < layers * H; i++) {
            bool on = false;
            for (int j = 0; j < 7; j++) on |= g[i] == ladder[j];
            tu_check(on, "gamma[%lld] %g is a ladder value", (long long)i, (double)g[i]);
            if (targets[t] == 0.999) tu_check(g[i] == 0.999f, "target .999: every head at the top");
            lost += 1.0 - g[i];
        }
        /* the allocation never buys more blocks than the target everywhere
         * (on the ladder: .98, .995, .999), which meets the same budget */
        if (targets[t] != 0.9) {
            float uni[3 * H];
            for (int64_t i = 0; i < layers * H; i++) uni[i] = (float)targets[t];
            const double a = la_sparse_calibrate_blocks(cal, g), b = la_sparse_calibrate_blocks(cal, uni);
            tu_check(a > 0 && a <= b, "target %g: %g blocks per head, %g uniform", targets[t], a, b);
        }
        /* 1e-6: the ladder's floats against the target's double */
        tu_check(lost / (double)((layers - 1) * H) <= 1.0 - targets[t] + 1e-6,
                 "target %g: mean uncovered share %g within it", targets[t], lost / (double)((layers - 1) * H));
    }
    tu_check(la_sparse_calibrate_finish(cal, 0.5, g) == LA_ERR_ARGUMENT, "target 0.5 rejected");
    tu_check(la_sparse_calibrate_finish(cal, 1.0, g) == LA_ERR_ARGUMENT, "target 1 rejected");
    /* the header's range is the accepted one, ends included (longattn ppl checks against it before a run) */
    tu_check(la_sparse_calibrate_finish(cal, LA_SPARSE_CALIB_TARGET_MIN, g) == LA_OK, "target at the range's low end");
    tu_check(la_sparse_calibrate_finish(cal, LA_SPARSE_CALIB_TARGET_MAX, g) == LA_OK, "target at the range's high end");
    tu_check(la_sparse_calibrate_finish(cal, LA_SPARSE_CALIB_TARGET_MIN - 1e-6, g) == LA_ERR_ARGUMENT,
             "target just under the range rejected");
    tu_check(la_sparse_calibrate_finish(cal, LA_SPARSE_CALIB_TARGET_MAX + 1e-6, g) == LA_ERR_ARGUMENT,
             "target just over the range rejected");
    tu_check(la_sparse_calibrate_finish(NULL, 0.99, g) == LA_ERR_NULL, "NULL calibration rejected");
    g[H + 2] = 0.42f;
    tu_check(la_sparse_calibrate_blocks(cal, g) == -1, "a gamma off the ladder: -1");
    /* an observation that does not match: its error comes back from finish */
    la_tensor q = make(rng, 70, H - 1), k = make(rng, 70, 1);
    la_sparse_calibrate_observe(cal, 1, &q, &k);
    tu_check(la_sparse_calibrate_finish(cal, 0.99, g) == LA_ERR_SHAPE, "a mismatched observation is reported");
    free(q.data), free(k.data);
    la_sparse_calibrate_free(cal);

    la_sparse_choice s;
    tu_check(!la_sparse_choice_parse("static:4", &s), "parse static");
    tu_check(la_sparse_calibrate_new(ctx, &s, 2, H, &cal) == LA_ERR_ARGUMENT && !cal, "static selector rejected");
    tu_check(la_sparse_calibrate_new(ctx, &c, 0, H, &cal) == LA_ERR_ARGUMENT, "0 layers rejected");
    tu_check(la_sparse_calibrate_new(NULL, &c, 2, H, &cal) == LA_ERR_NULL, "NULL ctx rejected");
}

/* Write text to path; then read it as 2 layers x 3 heads: the status. */
static la_status read_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f) return LA_ERR_IO;
    fputs(text, f);
    fclose(f);
    float g[6];
    return la_sparse_gammas_read(path, 2, 3, g);
}

static void check_file(uint64_t *rng) {
    char path[64];
    snprintf(path, sizeof path, "/tmp/la_sparse_heads_%d.txt", (int)getpid());
    float g[4 * 5], back[4 * 5];
    for (int i = 0; i < 20; i++) g[i] = (float)tu_uniform(rng, 0.01, 1.0);
    g[3] = 1.0f;
    tu_check(!la_sparse_gammas_write(path, g, 4, 5), "write: %s", la_last_error());
    tu_check(!la_sparse_gammas_read(path, 4, 5, back), "read back: %s", la_last_error());
    /* written with 6 significant digits */
    for (int i = 0; i < 20; i++) tu_check(tu_close(back[i], g[i], 0, 1e-5), "value %d round-trips", i);
    tu_check(la_sparse_gammas_read(path, 4, 6, back) == LA_ERR_FORMAT, "other head count rejected");
    tu_check(la_sparse_gammas_read(path, 5, 5, back) == LA_ERR_FORMAT, "other layer count rejected");
    tu_check(la_sparse_gammas_read("/nonexistent/x", 4, 5, back) == LA_ERR_IO, "missing file: LA_ERR_IO");
    /* a directory opens but does not read: it was "no 'longattn-sparse-gammas' header" (LA_ERR_FORMAT) */
    tu_check(la_sparse_gammas_read("/tmp", 4, 5, back) == LA_ERR_IO && strstr(la_last_error(), "cannot read '/tmp'"),
             "a directory: LA_ERR_IO, 'cannot read': '%s'", la_last_error());
    tu_check(la_sparse_gammas_write("/nonexistent/x", g, 4, 5) == LA_ERR_IO, "unwritable path: LA_ERR_IO");

    const char *hdr = "# comment\nlongattn-sparse-gammas 1 2 3\n";
    char buf[256];
    snprintf(buf, sizeof buf, "%s0.9 0.99 1\n0.5 0 0.999\n", hdr);
    tu_check(read_text(path, buf) == LA_OK, "a good file with a comment and a streaming head: %s", la_last_error());
    static const char *const bad[] = {
        "0.9 0.99 1\n0.5 0.95 0.999\n",                                   /* no header */
        "longattn-sparse-gammas 2 2 3\n0.9 0.99 1\n0.5 0.95 0.999\n",     /* version */
        "longattn-sparse-gammas 1 2 3 4\n0.9 0.99 1\n0.5 0.95 0.999\n",   /* header garbage */
        NULL,
    };
    for (int i = 0; bad[i]; i++) tu_check(read_text(path, bad[i]) == LA_ERR_FORMAT, "bad header %d rejected", i);
    static const char *const bad_body[] = {
        "0.9 0.99 1\n",                        /* a layer missing */
        "0.9 0.99 1\n0.5 0.95 0.999\n0.9 0.9 0.9\n", /* a layer too many */
        "0.9 0.99\n0.5 0.95 0.999\n",          /* a value missing */
        "0.9 0.99 1 1\n0.5 0.95 0.999\n",      /* a value too many */
        "0.9 -0.1 1\n0.5 0.95 0.999\n",        /* < 0 */
        "0.9 1.5 1\n0.5 0.95 0.999\n",         /* > 1 */
        "0.9 nan 1\n0.5 0.95 0.999\n",         /* not finite */
        "0.9 x 1\n0.5 0.95 0.999\n",           /* not a number */
        NULL,
    };
    for (int i = 0; bad_body[i]; i++) {
        snprintf(buf, sizeof buf, "%s%s", hdr, bad_body[i]);
        tu_check(read_text(path, buf) == LA_ERR_FORMAT, "bad body %d rejected", i);
    }
    tu_check(la_sparse_gammas_read(NULL, 2, 3, back) == LA_ERR_NULL, "NULL path rejected");
    remove(path);
}

int main(void) {
    uint64_t rng = tu_seed();
    la_context *ctx;
    if (la_context_create(&ctx, 2)) return 1;
    check_select(ctx, &rng);
    check_calibration(ctx, &rng);
    check_file(&rng);
    check_split(&rng);
    la_context_destroy(ctx);
    return tu_finish();
}
