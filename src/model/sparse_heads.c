/* Per-head coverage for the model's block-sparse prefill
 * (include/longattn_model.h, "per-head sparse coverage"): the calibration
 * that picks a coverage per (layer, query head), its file, and the
 * head-by-head selection that uses it. A coverage gamma already adapts
 * the block count to each query block; what a single gamma cannot do is
 * trade between heads: going from .99 to .999 costs a concentrated head a
 * block or two and a diffuse head dozens. The calibration measures that
 * price per head and spends the same mean uncovered mass where it buys
 * the most blocks. */
#include "model/sparse_heads.h"

#include "base/base.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N_LEVELS 7
/* the ladder's ends are the header's range of targets */
static const float levels[N_LEVELS] = {(float)LA_SPARSE_CALIB_TARGET_MIN, 0.95f, 0.98f, 0.99f, 0.995f, 0.998f,
                                       (float)LA_SPARSE_CALIB_TARGET_MAX};

struct la_sparse_calib {
    la_context *ctx;
    la_sparse_choice choice;
    int64_t n_layer, n_head;
    double *blocks; /* [n_layer][n_head][N_LEVELS]: blocks listed at each ladder coverage */
    bool *seen;     /* [n_layer]: observed at least once */
    la_status err;  /* the first observation's error */
    char msg[256];
};

/* The topk options of a choice at coverage gamma. */
static la_sparse_topk topk_of(const la_sparse_choice *c, float gamma) {
    la_sparse_topk o = la_sparse_topk_default();
    o.gamma = gamma;
    o.probe_rows = c->probe_rows;
    if (c->sink_blocks) o.sink_blocks = c->sink_blocks;
    if (c->local_blocks) o.local_blocks = c->local_blocks;
    return o;
}

la_sparse_static la_model_stream_opts(const la_sparse_choice *c) {
    const la_sparse_topk t = topk_of(c, 1.0f);
    la_sparse_static o = la_sparse_static_default();
    o.sink_blocks = t.sink_blocks, o.local_blocks = t.local_blocks;
    return o;
}

la_status la_model_select_heads(la_context *ctx, const la_sparse_choice *choice, const float *gamma,
                                const la_attention_params *p, const la_tensor *q, const la_tensor *k,
                                la_block_index *out) {
    const la_sparse_topk o = topk_of(choice, 1.0f);
    const la_sparse_static so = la_model_stream_opts(choice);
    return la_sparse_select_topk_heads(ctx, &o, gamma, &so, p, q, k, out);
}

/* ---- calibration ---- */

la_status la_sparse_calibrate_new(la_context *ctx, const la_sparse_choice *choice, int64_t n_layer, int64_t n_head,
                                  la_sparse_calib **out) {
    if (out) *out = NULL;
    if (!ctx || !choice || !out) return la_fail(LA_ERR_NULL, "ctx, choice or out is NULL");
    if (choice->kind != LA_SPARSE_TOPK)
        return la_fail(LA_ERR_ARGUMENT, "sparse calibration needs the topk selector (kind %d given)", (int)choice->kind);
    if (n_layer < 1 || n_head < 1 || n_layer > (1 << 20) || n_head > (1 << 20))
        return la_fail(LA_ERR_ARGUMENT, "n_layer %lld, n_head %lld: each must be in [1, 2^20]", (long long)n_layer,
                       (long long)n_head);
    la_sparse_calib *c = calloc(1, sizeof *c);
    if (c) c->blocks = calloc((size_t)(n_layer * n_head * N_LEVELS), sizeof *c->blocks);
    if (c) c->seen = calloc((size_t)n_layer, sizeof *c->seen);
    if (!c || !c->blocks || !c->seen) {
        la_sparse_calibrate_free(c);
        return la_fail(LA_ERR_NOMEM, "out of memory for the sparse calibration");
    }
    c->ctx = ctx, c->choice = *choice, c->n_layer = n_layer, c->n_head = n_head;
    *out = c;
    return la_succeed();
}

void la_sparse_calibrate_free(la_sparse_calib *c) {
    if (!c) return;
    free(c->blocks), free(c->seen), free(c);
}

void la_sparse_calibrate_observe(void *user, int64_t layer, const la_tensor *q, const la_tensor *k) {
    la_sparse_calib *c = user;
    if (!c || c->err || layer < c->choice.dense_layers) return;
    la_status st = LA_OK;
    if (layer < 0 || layer >= c->n_layer || !q || !k || q->ndim != 4 || q->shape[0] != 1 || q->shape[2] != c->n_head)
        st = la_fail(LA_ERR_SHAPE, "layer %lld or q's shape does not match the calibration's %lld layers x %lld heads",
                     (long long)layer, (long long)c->n_layer, (long long)c->n_head);
    la_attention_params p = la_attention_params_default();
    p.causal = 1; /* as the model's prefill */
    for (int lv = 0; lv < N_LEVELS && !st; lv++) {
        const la_sparse_topk o = topk_of(&c->choice, levels[lv]);
        la_block_index x;
        if ((st = la_sparse_select_topk(c->ctx, &o, &p, q, k, &x))) break;
        for (int64_t h = 0; h < c->n_head; h++)
            c->blocks[(layer * c->n_head + h) * N_LEVELS + lv] +=
                (double)(x.offsets[(h + 1) * x.q_blocks] - x.offsets[h * x.q_blocks]);
        la_block_index_free(&x);
    }
    if (st) {
        c->err = st;
        snprintf(c->msg, sizeof c->msg, "%s", la_last_error());
    } else {
        c->seen[layer] = true;
    }
}

/* Each head's ladder level at multiplier lambda: the least blocks +
 * lambda x uncovered share (blocks per head scaled by the largest count, so
 * lambda does not depend on the text's length); the mean uncovered share. */
static double pick(const la_sparse_calib *c, double scale, double lambda, int *lv_out) {
    double lost = 0;
    int64_t heads = 0;
    for (int64_t l = 0; l < c->n_layer; l++) {
        if (!c->seen[l]) continue;
        for (int64_t h = 0; h < c->n_head; h++) {
            const double *b = c->blocks + (l * c->n_head + h) * N_LEVELS;
            int best = N_LEVELS - 1;
            double best_cost = INFINITY;
            for (int lv = 0; lv < N_LEVELS; lv++) {
                const double cost = b[lv] / scale + lambda * (1.0 - levels[lv]);
                if (cost < best_cost) best_cost = cost, best = lv;
            }
            if (lv_out) lv_out[l * c->n_head + h] = best;
            lost += 1.0 - levels[best];
            heads++;
        }
    }
    return heads ? lost / (double)heads : 0;
}

la_status la_sparse_calibrate_finish(const la_sparse_calib *c, double target, float *gamma) {
    if (!c || !gamma) return la_fail(LA_ERR_NULL, "calibration or gamma is NULL");
    if (c->err) return la_fail(c->err, "sparse calibration: %s", c->msg);
    if (!(target >= LA_SPARSE_CALIB_TARGET_MIN && target <= LA_SPARSE_CALIB_TARGET_MAX))
        return la_fail(LA_ERR_ARGUMENT, "target coverage %g: must be in [%g, %g]", target, LA_SPARSE_CALIB_TARGET_MIN,
                       LA_SPARSE_CALIB_TARGET_MAX);
    const int64_t n = c->n_layer * c->n_head;
    int *lv = malloc(sizeof(int) * (size_t)n);
    if (!lv) return la_fail(LA_ERR_NOMEM, "out of memory for the levels");
    double scale = 1;
    for (int64_t i = 0; i < n * N_LEVELS; i++) scale = c->blocks[i] > scale ? c->blocks[i] : scale;
    /* the mean uncovered share falls as lambda grows: the least lambda that
     * meets the budget, bisected on a log scale (lambda 1e9 puts every head
     * at the top of the ladder, within any target) */
    const double budget = 1.0 - target + 1e-9;
    double lo = 1e-6, hi = 1e9;
    for (int it = 0; it < 100; it++) {
        const double mid = sqrt(lo * hi);
        if (pick(c, scale, mid, NULL) <= budget) hi = mid;
        else lo = mid;
    }
    pick(c, scale, hi, lv);
    for (int64_t l = 0; l < c->n_layer; l++)
        for (int64_t h = 0; h < c->n_head; h++)
            gamma[l * c->n_head + h] = c->seen[l] ? levels[lv[l * c->n_head + h]] : (float)target;
    free(lv);
    /* the multiplier's choice may undershoot the budget (the ladder is
     * discrete) and so cost more than the target everywhere, which meets it
     * too: then keep that */
    int on = 0;
    while (on < N_LEVELS && levels[on] != (float)target) on++;
    if (on < N_LEVELS) {
        const double per_head = la_sparse_calibrate_blocks(c, gamma);
        double one = 0;
        for (int64_t i = 0; i < c->n_layer * c->n_head; i++)
            if (c->seen[i / c->n_head]) one += c->blocks[i * N_LEVELS + on];
        if (one <= per_head)
            for (int64_t i = 0; i < n; i++) gamma[i] = (float)target;
    }
    return la_succeed();
}

double la_sparse_calibrate_blocks(const la_sparse_calib *c, const float *gamma) {
    if (!c || !gamma) return -1;
    double total = 0;
    for (int64_t l = 0; l < c->n_layer; l++)
        for (int64_t h = 0; c->seen[l] && h < c->n_head; h++) {
            int lv = 0;
            while (lv < N_LEVELS && levels[lv] != gamma[l * c->n_head + h]) lv++;
            if (lv == N_LEVELS) return -1;
            total += c->blocks[(l * c->n_head + h) * N_LEVELS + lv];
        }
    return total;
}

/* ---- the streaming / coverage split ---- */

typedef struct {
    double score;
    int64_t i;
} scored_head;
static int by_score(const void *a, const void *b) {
    const scored_head *x = a, *y = b;
    return x->score < y->score ? -1 : x->score > y->score ? 1 : (x->i > y->i) - (x->i < y->i);
}

la_status la_sparse_heads_split(const double *score, int64_t n_layer, int64_t n_head, int64_t dense_layers,
                                double share, float gamma, float *out) {
    if (!score || !out) return la_fail(LA_ERR_NULL, "score or out is NULL");
    if (n_layer < 1 || n_head < 1 || n_layer > (1 << 20) || n_head > (1 << 20) || dense_layers < 0 ||
        dense_layers > n_layer)
        return la_fail(LA_ERR_ARGUMENT, "n_layer %lld, n_head %lld, dense_layers %lld: need sizes in [1, 2^20] and "
                       "dense_layers in [0, n_layer]", (long long)n_layer, (long long)n_head, (long long)dense_layers);
    if (!(share >= 0 && share <= 1) || !(gamma > 0 && gamma <= 1))
        return la_fail(LA_ERR_ARGUMENT, "share %g must be in [0, 1] and gamma %g in (0, 1]", share, (double)gamma);
    const int64_t first = dense_layers * n_head, n = (n_layer - dense_layers) * n_head;
    for (int64_t i = first; i < first + n; i++)
        if (!(score[i] >= 0 && isfinite(score[i])))
            return la_fail(LA_ERR_ARGUMENT, "score[%lld] is %g; scores must be finite and >= 0", (long long)i, score[i]);
    scored_head *order = malloc(sizeof *order * (size_t)(n ? n : 1));
    if (!order) return la_fail(LA_ERR_NOMEM, "out of memory for the head order");
    for (int64_t i = 0; i < n; i++) order[i] = (scored_head){score[first + i], first + i};
    qsort(order, (size_t)n, sizeof *order, by_score);
    for (int64_t i = 0; i < n_layer * n_head; i++) out[i] = gamma;
    const int64_t streaming = (int64_t)floor(share * (double)n);
    for (int64_t i = 0; i < streaming; i++) out[order[i].i] = 0;
    free(order);
    return la_succeed();
}

/* ---- the file ---- */

la_status la_sparse_gammas_write(const char *path, const float *gamma, int64_t n_layer, int64_t n_head) {
    if (!path || !gamma) return la_fail(LA_ERR_NULL, "path or gamma is NULL");
    if (n_layer < 1 || n_head < 1 || n_layer > (1 << 20) || n_head > (1 << 20))
        return la_fail(LA_ERR_ARGUMENT, "n_layer %lld and n_head %lld must be in [1, 2^20]", (long long)n_layer,
                       (long long)n_head);
    /* what _read accepts, checked before the file is touched: a file it
     * would refuse (nan, 2, -0.5 were written) is not written */
    for (int64_t i = 0; i < n_layer * n_head; i++)
        if (!(gamma[i] >= 0 && gamma[i] <= 1))
            return la_fail(LA_ERR_ARGUMENT, "gamma[%lld] (layer %lld, head %lld) is %g; coverages are in [0, 1]",
                           (long long)i, (long long)(i / n_head), (long long)(i % n_head), (double)gamma[i]);
    FILE *f = fopen(path, "w");
    if (!f) return la_fail(LA_ERR_IO, "cannot write '%s'", path);
    fprintf(f, "# per-head coverage for topk's sparse prefill (la_sparse_calibrate); use with --sparse-heads\n"
               "longattn-sparse-gammas 1 %lld %lld\n", (long long)n_layer, (long long)n_head);
    for (int64_t l = 0; l < n_layer; l++)
        for (int64_t h = 0; h < n_head; h++) fprintf(f, "%.6g%c", (double)gamma[l * n_head + h], h + 1 < n_head ? ' ' : '\n');
    const bool ok = !ferror(f);
    if (fclose(f) || !ok) return la_fail(LA_ERR_IO, "error writing '%s'", path);
    return la_succeed();
}

la_status la_sparse_gammas_read(const char *path, int64_t n_layer, int64_t n_head, float *gamma) {
    if (!path || !gamma) return la_fail(LA_ERR_NULL, "path or gamma is NULL");
    /* as _write and la_sparse_calibrate_new: layer x n_head + head must not overflow */
    if (n_layer < 1 || n_head < 1 || n_layer > (1 << 20) || n_head > (1 << 20))
        return la_fail(LA_ERR_ARGUMENT, "n_layer %lld and n_head %lld must be in [1, 2^20]", (long long)n_layer,
                       (long long)n_head);
    FILE *f = fopen(path, "r");
    if (!f) return la_fail(LA_ERR_IO, "cannot open '%s'", path);
    char line[4096];
    int64_t lineno = 0, layer = -1; /* -1: before the header */
    la_status st = LA_OK;
    while (!st && fgets(line, sizeof line, f)) {
        lineno++;
        if (!strchr(line, '\n') && !feof(f)) {
            st = la_fail(LA_ERR_FORMAT, "%s:%lld: line too long", path, (long long)lineno);
            break;
        }
        if (layer < 0) {
            if (line[0] == '#') continue;
            long long nl, nh;
            int ver, used = 0;
            if (sscanf(line, "longattn-sparse-gammas %d %lld %lld %n", &ver, &nl, &nh, &used) != 3 || line[used] ||
                ver != 1)
                st = la_fail(LA_ERR_FORMAT, "%s:%lld: expected 'longattn-sparse-gammas 1 LAYERS HEADS'", path,
                             (long long)lineno);
            else if (nl != n_layer || nh != n_head)
                st = la_fail(LA_ERR_FORMAT, "%s: %lld layers x %lld heads; the model has %lld x %lld", path, nl, nh,
                             (long long)n_layer, (long long)n_head);
            layer = 0;
            continue;
        }
        if (layer >= n_layer) {
            st = la_fail(LA_ERR_FORMAT, "%s:%lld: more than %lld layer lines", path, (long long)lineno,
                         (long long)n_layer);
            break;
        }
        const char *s = line;
        for (int64_t h = 0; h < n_head && !st; h++) {
            char *end;
            const double g = strtod(s, &end);
            if (end == s || !isfinite(g) || !(g >= 0 && g <= 1))
                st = la_fail(LA_ERR_FORMAT, "%s:%lld: value %lld is missing or not in [0, 1]", path,
                             (long long)lineno, (long long)h + 1);
            gamma[layer * n_head + h] = (float)g;
            s = end;
        }
        while (!st && (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')) s++;
        if (!st && *s)
            st = la_fail(LA_ERR_FORMAT, "%s:%lld: more than %lld values", path, (long long)lineno, (long long)n_head);
        layer++;
    }
    /* a directory opens but does not read (EISDIR): say so, not "no header" */
    const bool read_failed = ferror(f);
    const int why = errno;
    fclose(f);
    if (!st && read_failed) st = la_fail(LA_ERR_IO, "cannot read '%s': %s", path, why ? strerror(why) : "read error");
    if (!st && layer < n_layer)
        st = la_fail(LA_ERR_FORMAT, "%s: %s", path,
                     layer < 0 ? "no 'longattn-sparse-gammas' header" : "fewer layer lines than the header says");
    return st ? st : la_succeed();
}
