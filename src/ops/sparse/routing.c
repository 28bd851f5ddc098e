/* The routing selector (after the Routing Transformer, Roy et al. 2021):
 * per query head, online spherical k-means over the L2-normalised queries
 * and keys with centroids shared by both, carried across calls in a state
 * and moved by an exponential moving average; balanced clusters (each
 * centroid's top-w queries and top-w keys per sequence) decide which key
 * blocks each query block lists. Heads are independent: each is one task
 * of the team, with its own generator stream (seed, head), so the index and
 * the centroids never depend on the threads. */
#include "ops/sparse/select_common.h"

#include <math.h>
#include <stdlib.h>

struct la_sparse_routing_state {
    int64_t H, D, C;
    uint64_t seed;
    bool ready;        /* centroids set (by the first call) */
    double *centroids; /* [H][C][D], unit vectors */
    double *objective; /* [cap]: the last call's, see la_sparse_routing_objective */
    int64_t n_objective, cap_objective;
};

#define ROUTING_MAX_CLUSTERS 65536
#define ROUTING_MAX_ITERATIONS 1000

la_sparse_routing la_sparse_routing_default(void) {
    return (la_sparse_routing){.block_size = 0, .members = 0, .iterations = 2, .decay = 0.9f, .sink_blocks = 0,
                               .local_blocks = 1};
}

la_status la_sparse_routing_state_create(la_sparse_routing_state **out, int64_t heads, int64_t head_dim,
                                         int64_t clusters, uint64_t seed) {
    if (!out) return la_fail(LA_ERR_NULL, "out is NULL");
    *out = NULL;
    if (heads < 1 || head_dim < 1 || clusters < 1 || clusters > ROUTING_MAX_CLUSTERS)
        return la_fail(LA_ERR_ARGUMENT, "heads %lld, head_dim %lld, clusters %lld: need >= 1 each, clusters <= %d",
                       (long long)heads, (long long)head_dim, (long long)clusters, ROUTING_MAX_CLUSTERS);
    size_t n;
    if (!la_mul_size((size_t)heads, (size_t)clusters, &n) || !la_mul_size(n, (size_t)head_dim, &n) ||
        !la_mul_size(n, sizeof(double), &n))
        return la_fail(LA_ERR_OVERFLOW, "heads x clusters x head_dim overflows");
    la_sparse_routing_state *s = calloc(1, sizeof *s);
    if (s) s->centroids = malloc(n);
    if (!s || !s->centroids) {
        free(s);
        return la_fail(LA_ERR_NOMEM, "out of memory for %lld x %lld centroids", (long long)heads, (long long)clusters);
    }
    s->H = heads, s->D = head_dim, s->C = clusters, s->seed = seed;
    *out = s;
    return la_succeed();
}

void la_sparse_routing_state_free(la_sparse_routing_state *s) {
    if (!s) return;
    free(s->centroids);
    free(s->objective);
    free(s);
}

la_status la_sparse_routing_objective(const la_sparse_routing_state *s, double *values, int64_t n, int64_t *count) {
    if (!s || !count || (n > 0 && !values))
        return la_fail(LA_ERR_NULL, "%s is NULL", !s ? "state" : !count ? "count" : "values");
    if (n < 0) return la_fail(LA_ERR_ARGUMENT, "n is %lld; must be >= 0", (long long)n);
    for (int64_t t = 0; t < n && t < s->n_objective; t++) values[t] = s->objective[t];
    *count = s->n_objective;
    return la_succeed();
}

/* ---- one head ---- */

/* Row r of head h of sequence b of t, L2-normalised, into x[D] (zero when
 * the row is zero). */
static void unit_row(const la_tensor *t, int64_t b, int64_t r, int64_t h, int64_t D, float *x) {
    const char *row = (const char *)t->data +
                      (b * t->stride[0] + r * t->stride[1] + h * t->stride[2]) * (int64_t)la_dtype_size(t->dtype);
    double n2 = 0;
    for (int64_t d = 0; d < D; d++) {
        x[d] = la_load_f32(row, t->dtype, d);
        n2 += (double)x[d] * x[d];
    }
    const double inv = n2 > 0 ? 1 / sqrt(n2) : 0;
    for (int64_t d = 0; d < D; d++) x[d] = (float)(x[d] * inv);
}

/* Normalise v[D] in place; false when it is zero. */
static bool normalise(double *v, int64_t D) {
    double n2 = 0;
    for (int64_t d = 0; d < D; d++) n2 += v[d] * v[d];
    if (!(n2 > 0)) return false;
    const double inv = 1 / sqrt(n2);
    for (int64_t d = 0; d < D; d++) v[d] *= inv;
    return true;
}

/* A standard normal draw (Box-Muller) from the stream. */
static double normal(uint64_t *g) {
    double u1 = ((double)(la_sel_splitmix(g) >> 11) + 0.5) / 9007199254740992.0;
    double u2 = (double)(la_sel_splitmix(g) >> 11) / 9007199254740992.0;
    return sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2);
}

/* First centroids of a head: distinct nonzero points drawn from the
 * stream, or random unit vectors when there are too few. */
static void init_centroids(int64_t C, int64_t D, const float *pts, int64_t npts, uint64_t *g, double *cent) {
    int64_t *chosen = malloc(sizeof(int64_t) * (size_t)C);
    for (int64_t c = 0; c < C; c++) {
        bool done = false;
        if (chosen) chosen[c] = -1;
        for (int tries = 0; tries < 8 && npts > 0 && chosen && !done; tries++) {
            const int64_t i = (int64_t)(la_sel_splitmix(g) % (uint64_t)npts);
            bool dup = false;
            for (int64_t e = 0; e < c && !dup; e++) dup = chosen[e] == i;
            if (dup) continue;
            for (int64_t d = 0; d < D; d++) cent[c * D + d] = pts[i * D + d];
            if (normalise(cent + c * D, D)) chosen[c] = i, done = true;
        }
        while (!done) {
            for (int64_t d = 0; d < D; d++) cent[c * D + d] = normal(g);
            done = normalise(cent + c * D, D);
        }
    }
    free(chosen);
}

/* Per-thread scratch. */
typedef struct {
    float *pts;          /* [npts][D] */
    float *cf;           /* [C][D]: the centroids in f32 */
    float *prod;         /* [PCH * C] or [n][CG]: point . centroid products */
    float *pack;         /* a packed panel */
    double *sums;        /* [C][D] */
    int64_t *counts;     /* [C] */
    la_sel_ranked *rank; /* [max(Lq, Lk)] */
    unsigned char *qm, *km, *mark; /* [C][nqb], [C][nkb], [nkb] */
} rt_scratch;

/* Points per product chunk for C centroids: at most 2^20 products. */
static int64_t point_chunk(int64_t C) { return C >= (1 << 20) / 256 ? ((1 << 20) / C > 0 ? (1 << 20) / C : 1) : 256; }
/* Centroids per group when ranking members: n * CG products. */
#define CG 16

static void cent_f32(const double *cent, int64_t C, int64_t D, float *cf) {
    for (int64_t e = 0; e < C * D; e++) cf[e] = (float)cent[e];
}

/* One pass over the points against the centroids: the mean of 1 - cosine
 * to the nearest (ties to the lower index), and with sums, each point
 * added into its nearest centroid's sum and count. */
static double assign(la_simd simd, const float *pts, int64_t npts, const double *cent, int64_t C, int64_t D,
                     rt_scratch *t, bool sums) {
    cent_f32(cent, C, D, t->cf);
    const int64_t pch = point_chunk(C);
    double sum = 0;
    for (int64_t p0 = 0; p0 < npts; p0 += pch) {
        const int64_t np = p0 + pch < npts ? pch : npts - p0;
        LA_ISA_PICK(la_cpu_sel_gemm_nt, simd)(pts + p0 * D, D, t->cf, LA_F32, D, np, C, D, t->prod, C, t->pack);
        for (int64_t i = 0; i < np; i++) {
            const float *pr = t->prod + i * C;
            int64_t bc = 0;
            for (int64_t c = 1; c < C; c++)
                if (pr[c] > pr[bc]) bc = c;
            sum += 1 - (double)pr[bc];
            if (!sums) continue;
            t->counts[bc]++;
            const float *x = pts + (p0 + i) * D;
            double *m = t->sums + bc * D;
            for (int64_t d = 0; d < D; d++) m[d] += x[d];
        }
    }
    return npts ? sum / (double)npts : 0;
}

/* k-means rounds on head h's points; cent [C][D] in, moved in place;
 * obj [iterations + 1]. */
static void kmeans(const la_sparse_routing *o, la_simd simd, int64_t C, int64_t D, rt_scratch *t, int64_t npts,
                   double *cent, double *obj) {
    for (int64_t it = 0; it < o->iterations; it++) {
        memset(t->sums, 0, sizeof(double) * (size_t)(C * D));
        memset(t->counts, 0, sizeof(int64_t) * (size_t)C);
        obj[it] = assign(simd, t->pts, npts, cent, C, D, t, true);
        for (int64_t c = 0; c < C; c++) {
            double *m = t->sums + c * D, *cc = cent + c * D;
            if (!t->counts[c] || !normalise(m, D)) continue;
            double u[LA_MAX_HEAD_DIM];
            for (int64_t d = 0; d < D; d++) u[d] = o->decay * cc[d] + (1 - (double)o->decay) * m[d];
            if (normalise(u, D)) memcpy(cc, u, sizeof(double) * (size_t)D);
        }
    }
    obj[o->iterations] = assign(simd, t->pts, npts, cent, C, D, t, false);
}

/* Mark, for each centroid, the blocks of its top-w points among
 * pts[0..n) (block size bs) in m [C][nb]. t->cf holds the centroids. */
static void members(la_simd simd, int64_t C, int64_t D, const float *pts, int64_t n, int64_t w, int64_t bs,
                    int64_t nb, rt_scratch *t, unsigned char *m) {
    memset(m, 0, (size_t)(C * nb));
    if (w > n) w = n;
    for (int64_t c0 = 0; c0 < C && w > 0; c0 += CG) {
        const int64_t ng = c0 + CG < C ? CG : C - c0;
        LA_ISA_PICK(la_cpu_sel_gemm_nt, simd)(pts, D, t->cf + c0 * D, LA_F32, D, n, ng, D, t->prod, ng, t->pack);
        for (int64_t c = c0; c < c0 + ng; c++) {
            for (int64_t i = 0; i < n; i++) t->rank[i] = (la_sel_ranked){t->prod[i * ng + (c - c0)], (int32_t)i};
            la_sel_partial_sort(t->rank, n, w);
            for (int64_t e = 0; e < w; e++) m[c * nb + t->rank[e].id / bs] = 1;
        }
    }
}

static bool routing_head(const la_sparse_routing *o, la_simd simd, const la_sel_shape *S, const la_tensor *q, const la_tensor *k,
                         int64_t h, int64_t C, bool ready, uint64_t seed, double *cent, double *obj, rt_scratch *t,
                         la_sel_lists *lists) {
    const int64_t D = S->D, hk = h / (S->H / S->Hkv), npts = S->B * (S->Lq + S->Lk);
    for (int64_t b = 0; b < S->B; b++) {
        for (int64_t i = 0; i < S->Lq; i++) unit_row(q, b, i, h, D, t->pts + (b * (S->Lq + S->Lk) + i) * D);
        for (int64_t j = 0; j < S->Lk; j++) unit_row(k, b, j, hk, D, t->pts + (b * (S->Lq + S->Lk) + S->Lq + j) * D);
    }
    if (!ready) {
        uint64_t g = seed ^ (0x9e3779b97f4a7c15ull * (uint64_t)(h + 1));
        init_centroids(C, D, t->pts, npts, &g, cent);
    }
    kmeans(o, simd, C, D, t, npts, cent, obj);
    cent_f32(cent, C, D, t->cf);
    const int64_t wq = o->members ? o->members : (S->Lq + C - 1) / C, wk = o->members ? o->members : (S->Lk + C - 1) / C;
    for (int64_t b = 0; b < S->B; b++) {
        const float *qp = t->pts + b * (S->Lq + S->Lk) * D, *kp = qp + S->Lq * D;
        members(simd, C, D, qp, S->Lq, wq, S->bs, S->nqb, t, t->qm);
        members(simd, C, D, kp, S->Lk, wk, S->bs, S->nkb, t, t->km);
        la_sel_lists *l = &lists[b * S->H + h];
        if (!(l->counts = calloc((size_t)S->nqb + 1, sizeof(int64_t)))) return false;
        for (int64_t qb = 0; qb < S->nqb; qb++) {
            int64_t i0, i1, kend;
            la_sel_q_block_rows(S, qb, &i0, &i1, &kend);
            const int64_t d1 = la_sel_diag_block(S, i1 - 1);
            memset(t->mark, 0, (size_t)S->nkb);
            for (int64_t c = 0; c < C; c++)
                if (t->qm[c * S->nqb + qb])
                    for (int64_t kb = 0; kb < S->nkb; kb++) t->mark[kb] |= t->km[c * S->nkb + kb];
            la_sel_mark_sink_local(S, t->mark, o->sink_blocks, o->local_blocks, d1);
            if (!la_sel_push_marked(S, l, t->mark, qb, i0, i1, kend)) return false;
        }
    }
    return true;
}

typedef struct {
    la_context *ctx;
    const la_sparse_routing *o;
    la_sparse_routing_state *st;
} seq_arg;

static la_status routing_seq(void *arg, const la_attention_params *p, const la_tensor *q, const la_tensor *k,
                             int64_t b, la_block_index *out) {
    const seq_arg *a = arg;
    (void)b;
    return la_sparse_select_routing(a->ctx, a->o, a->st, p, q, k, out);
}

la_status la_sparse_select_routing(la_context *ctx, const la_sparse_routing *o, la_sparse_routing_state *st,
                                   const la_attention_params *p, const la_tensor *q, const la_tensor *k,
                                   la_block_index *out) {
    if (out) memset(out, 0, sizeof *out);
    if (!ctx || !o || !st || !out)
        return la_fail(LA_ERR_NULL, "%s is NULL", !ctx ? "ctx" : !o ? "opts" : !st ? "state" : "out");
    la_sel_shape S;
    la_status s;
    if ((s = la_sel_check_budget(o->members, "members")) || (s = la_sel_check_budget(o->iterations, "iterations")) ||
        (s = la_sel_check_budget(o->sink_blocks, "sink_blocks")) ||
        (s = la_sel_check_budget(o->local_blocks, "local_blocks")))
        return s;
    if (o->iterations > ROUTING_MAX_ITERATIONS)
        return la_fail(LA_ERR_ARGUMENT, "iterations is %lld; at most %d", (long long)o->iterations,
                       ROUTING_MAX_ITERATIONS);
    if (!(o->decay >= 0 && o->decay < 1))
        return la_fail(LA_ERR_ARGUMENT, "decay is %g; must be in [0, 1)", (double)o->decay);
    if (p && (p->cu_seqlens_q || p->cu_seqlens_k)) {
        if (q && q->ndim == 3 && (q->shape[1] != st->H || q->shape[2] != st->D))
            return la_fail(LA_ERR_SHAPE, "the state is for %lld heads of %lld dims; q has %lld of %lld",
                           (long long)st->H, (long long)st->D, (long long)q->shape[1], (long long)q->shape[2]);
        seq_arg a = {.ctx = ctx, .o = o, .st = st};
        s = la_sel_varlen(p, q, k, o->block_size, routing_seq, &a, out);
        return s ? s : la_succeed();
    }
    if ((s = la_sel_check_qk(p, q, k, o->block_size, &S))) return s;
    if (st->H != S.H || st->D != S.D)
        return la_fail(LA_ERR_SHAPE, "the state is for %lld heads of %lld dims; q has %lld of %lld", (long long)st->H,
                       (long long)st->D, (long long)S.H, (long long)S.D);
    const int64_t C = st->C, D = S.D, H = S.H, nobj = o->iterations + 1;
    size_t npts, pts_bytes;
    if (!la_mul_size((size_t)S.B, (size_t)(S.Lq + S.Lk), &npts) || !la_mul_size(npts, (size_t)D, &pts_bytes) ||
        !la_mul_size(pts_bytes, sizeof(float), &pts_bytes))
        return la_fail(LA_ERR_OVERFLOW, "the routing points overflow");
    double *cent = malloc(sizeof(double) * (size_t)(H * C * D)), *obj = calloc((size_t)(H * nobj), sizeof(double));
    la_sel_lists *lists = calloc((size_t)(S.B * H), sizeof *lists);
    if (!cent || !obj || !lists) {
        free(cent), free(obj), free(lists);
        return la_fail(LA_ERR_NOMEM, "out of memory for the routing state's copy");
    }
    memcpy(cent, st->centroids, sizeof(double) * (size_t)(H * C * D));
    bool ok = true;
    const int nthreads = ctx->threads > 0 ? ctx->threads : 1;
    const int64_t maxL = S.Lq > S.Lk ? S.Lq : S.Lk;
#pragma omp parallel num_threads(nthreads) reduction(&& : ok)
    {
        const int64_t pch = point_chunk(C), nprod = pch * C > maxL * CG ? pch * C : maxL * CG;
        rt_scratch t = {.pts = malloc(pts_bytes + 1), .cf = malloc(sizeof(float) * (size_t)(C * D)),
                        .prod = malloc(sizeof(float) * (size_t)nprod),
                        .pack = malloc(sizeof(float) * (size_t)(D * LA_SEL_PANEL)), .sums = malloc(sizeof(double) * (size_t)(C * D)),
                        .counts = malloc(sizeof(int64_t) * (size_t)C),
                        .rank = malloc(sizeof(la_sel_ranked) * (size_t)(maxL + 1)),
                        .qm = malloc((size_t)(C * S.nqb) + 1), .km = malloc((size_t)(C * S.nkb) + 1),
                        .mark = malloc((size_t)S.nkb + 1)};
        ok = t.pts && t.cf && t.prod && t.pack && t.sums && t.counts && t.rank && t.qm && t.km && t.mark;
#pragma omp for schedule(dynamic, 1)
        for (int64_t h = 0; h < H; h++) {
            if (!ok) continue;
            ok = routing_head(o, ctx->simd, &S, q, k, h, C, st->ready, st->seed, cent + h * C * D, obj + h * nobj, &t, lists);
        }
        free(t.pts), free(t.cf), free(t.prod), free(t.pack), free(t.sums), free(t.counts), free(t.rank), free(t.qm), free(t.km), free(t.mark);
    }
    if (ok && st->cap_objective < nobj) {
        double *g = realloc(st->objective, sizeof(double) * (size_t)nobj);
        if (g) st->objective = g, st->cap_objective = nobj;
        else ok = false;
    }
    if ((s = la_sel_join(&S, lists, ok, out))) {
        free(cent), free(obj);
        return s;
    }
    /* commit: centroids, and the objective averaged over heads */
    memcpy(st->centroids, cent, sizeof(double) * (size_t)(H * C * D));
    st->ready = true;
    for (int64_t t = 0; t < nobj; t++) {
        double m = 0;
        for (int64_t h = 0; h < H; h++) m += obj[h * nobj + t];
        st->objective[t] = m / (double)H;
    }
    st->n_objective = nobj;
    free(cent), free(obj);
    return la_succeed();
}
