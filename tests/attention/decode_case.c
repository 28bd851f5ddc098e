/* Decode attention as a harness case: la_attention_decode against the
 * float64 reference on K/V gathered through the page table. */
#include "attention_common.h"
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    harness_case base; /* first: the harness sees this */
    attn_decode_spec s;
    bool paged, with_lse;
    int64_t blocks_per_seq, num_blocks, kshape[4];
    int64_t row, qmem; /* q/out: floats per (token, head) row and in all */
    float slopes[ATTN_MAX_HEADS];
    la_attention_params p;
    la_kv_layout layout;
    int32_t *table;
    void *k, *v;
    float *q, *out, *lse;
    la_tensor tq, tk, tv, to, tl;
    double *want, *want_lse; /* [B][Lq][H][D], [B][Lq][H] */
} dc_case;

/* Tolerance |got - want| <= atol + rtol |want|: q is f32 and K/V are exact
 * in their storage dtype in both computations, so only the kernel's f32
 * arithmetic differs: dot products over D <= 512, the vector exp, partial
 * sums merged over chunks of up to ~5k keys. Worst seen ~1e-6 on outputs of
 * size ~0.05; 2e-5 + 2e-4 relative leaves a wide margin. */
#define ATOL 2e-5
#define RTOL 2e-4
#define LSE_ATOL 5e-5
#define LSE_RTOL 1e-6

static int64_t max_seqlen(const attn_decode_spec *s) {
    int64_t m = 0;
    for (int b = 0; b < s->B; b++)
        if (s->seqlens[b] > m) m = s->seqlens[b];
    return m;
}

static void describe(const harness_case *hc, harness_fields *f) {
    const dc_case *c = (const dc_case *)hc;
    harness_field_str(f, "dtype", la_dtype_name(c->s.kv_dt));
    harness_field_str(f, "cache", c->paged ? "paged" : "flat");
    harness_field_int(f, "B", c->s.B);
    if (c->s.Lq != 1) harness_field_int(f, "Lq", c->s.Lq);
    harness_field_int(f, "H", c->s.H);
    harness_field_int(f, "Hkv", c->s.Hkv);
    harness_field_int(f, "L", max_seqlen(&c->s));
    harness_field_int(f, "D", c->s.D);
}

static double flops(const harness_case *hc) {
    const dc_case *c = (const dc_case *)hc;
    double keys = 0;
    for (int b = 0; b < c->s.B; b++) keys += c->s.seqlens[b];
    return 4.0 * (double)(c->s.H * c->s.Lq * c->s.D) * keys;
}

/* The keys and values in use, read once; q and out are noise beside them. */
static double bytes(const harness_case *hc) {
    const dc_case *c = (const dc_case *)hc;
    double keys = 0;
    for (int b = 0; b < c->s.B; b++) keys += c->s.seqlens[b];
    return 2.0 * keys * (double)(c->s.Hkv * c->s.D) * (double)la_dtype_size(c->s.kv_dt);
}

static void poison(harness_case *hc) {
    dc_case *c = (dc_case *)hc;
    tu_poison(c->out, LA_F32, c->qmem);
    tu_poison(c->lse, LA_F32, c->s.B * c->s.Lq * c->s.H);
}

/* Distinct block ids, shuffled, so a kernel that assumes order fails. */
static void shuffle_table(dc_case *c, uint64_t *rng) {
    int32_t *perm = tu_alloc(sizeof(int32_t) * (size_t)c->num_blocks);
    for (int64_t i = 0; i < c->num_blocks; i++) perm[i] = (int32_t)i;
    for (int64_t i = c->num_blocks - 1; i > 0; i--) {
        int64_t j = tu_randint(rng, 0, i);
        int32_t t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    for (int64_t i = 0; i < c->s.B * c->blocks_per_seq; i++) c->table[i] = perm[i];
    free(perm);
}

/* q and out, optionally as [B, H, Lq, D + 8] memory viewed as [B, Lq, H, D]. */
static void make_views(dc_case *c) {
    const int64_t B = c->s.B, Lq = c->s.Lq, H = c->s.H, D = c->s.D;
    c->tk = la_tensor_contiguous(c->k, c->s.kv_dt, 4, c->kshape);
    c->tv = la_tensor_contiguous(c->v, c->s.kv_dt, 4, c->kshape);
    if (c->s.head_major) { /* a head's rows adjacent: the grouped decode reads them in place */
        const int64_t st[4] = {c->kshape[1] * D, D, c->kshape[0] * c->kshape[1] * D, 1};
        memcpy(c->tk.stride, st, sizeof st);
        memcpy(c->tv.stride, st, sizeof st);
    }
    c->tq = la_tensor_contiguous(c->q, LA_F32, 4, (int64_t[]){B, Lq, H, D});
    if (c->s.strided_q) c->tq.stride[1] = c->row, c->tq.stride[2] = Lq * c->row, c->tq.stride[0] = H * Lq * c->row;
    c->to = c->tq;
    c->to.data = c->out;
    c->tl = la_tensor_contiguous(c->lse, LA_F32, 3, (int64_t[]){B, Lq, H});
}

static bool setup(harness_case *hc, uint64_t seed) {
    dc_case *c = (dc_case *)hc;
    uint64_t rng = seed;
    int64_t kn = c->kshape[0] * c->kshape[1] * c->s.Hkv * c->s.D;
    size_t es = la_dtype_size(c->s.kv_dt);
    c->k = malloc((size_t)kn * es + 1), c->v = malloc((size_t)kn * es + 1);
    c->q = malloc(sizeof(float) * (size_t)c->qmem), c->out = malloc(sizeof(float) * (size_t)c->qmem);
    c->lse = malloc(sizeof(float) * (size_t)(c->s.B * c->s.Lq * c->s.H));
    c->table = malloc(sizeof(int32_t) * (size_t)(c->s.B * c->blocks_per_seq + 1));
    if (!c->k || !c->v || !c->q || !c->out || !c->lse || !c->table) return false;
    if (c->paged) shuffle_table(c, &rng);
    tu_fill(&rng, c->k, c->s.kv_dt, kn, -1, 1);
    tu_fill(&rng, c->v, c->s.kv_dt, kn, -1, 1);
    tu_fill(&rng, c->q, LA_F32, c->qmem, -1, 1);
    for (int64_t h = 0; h < c->s.H && h < ATTN_MAX_HEADS; h++) c->slopes[h] = (float)tu_uniform(&rng, 0.01, 0.2);
    c->p = c->s.p;
    if (c->s.alibi) c->p.alibi_slopes = c->slopes;
    c->layout = (la_kv_layout){.seqlens_k = c->s.seqlens,
                               .block_table = c->paged ? c->table : NULL,
                               .blocks_per_seq = c->blocks_per_seq};
    make_views(c);
    poison(hc);
    return true;
}

static la_status run(harness_case *hc, la_context *ctx) {
    dc_case *c = (dc_case *)hc;
    return la_attention_decode(ctx, &c->p, &c->tq, &c->tk, &c->tv, &c->layout, &c->to, c->with_lse ? &c->tl : NULL);
}

/* Head h of sequence b: gather its keys through the table, then the float64
 * reference of its Lq rows. hk, hv hold max_seqlen rows, hq, ho Lq rows. */
static void reference_head(dc_case *c, int64_t b, int64_t h, double *hq, double *hk, double *hv, double *ho,
                           double *hl) {
    const int64_t Lq = c->s.Lq, H = c->s.H, D = c->s.D, G = H / c->s.Hkv, lk = c->s.seqlens[b];
    for (int64_t j = 0; j < lk; j++) {
        int64_t blk = c->paged ? c->table[b * c->blocks_per_seq + j / c->s.block_size] : b;
        int64_t r = c->paged ? j % c->s.block_size : j;
        for (int64_t d = 0; d < D; d++) {
            int64_t idx[4] = {blk, r, h / G, d};
            hk[j * D + d] = tu_get(&c->tk, idx);
            hv[j * D + d] = tu_get(&c->tv, idx);
        }
    }
    for (int64_t i = 0; i < Lq; i++)
        for (int64_t d = 0; d < D; d++) hq[i * D + d] = tu_get(&c->tq, (int64_t[]){b, i, h, d});
    ref_attn_opts o = attn_ref_opts(&c->p, D, c->s.alibi ? c->slopes[h] : 0);
    ref_attention_forward(&o, Lq, lk, D, hq, hk, hv, ho, hl);
    for (int64_t i = 0; i < Lq; i++) {
        memcpy(c->want + ((b * Lq + i) * H + h) * D, ho + i * D, sizeof(double) * (size_t)D);
        c->want_lse[(b * Lq + i) * H + h] = hl[i];
    }
}

/* A few query rows against one cache: every row costs what a sample would,
 * so the sampled reference is the full one. */
static bool reference(harness_case *hc, bool sampled) {
    dc_case *c = (dc_case *)hc;
    const int64_t B = c->s.B, Lq = c->s.Lq, H = c->s.H, D = c->s.D;
    int64_t maxk = max_seqlen(&c->s) > 0 ? max_seqlen(&c->s) : 1;
    c->want = tu_alloc(sizeof(double) * (size_t)(B * Lq * H * D));
    c->want_lse = tu_alloc(sizeof(double) * (size_t)(B * Lq * H));
    double *hq = tu_alloc(8 * (size_t)(Lq * D)), *ho = tu_alloc(8 * (size_t)(Lq * D)), *hl = tu_alloc(8 * (size_t)Lq);
    double *hk = tu_alloc(8 * (size_t)(maxk * D)), *hv = tu_alloc(8 * (size_t)(maxk * D));
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++) reference_head(c, b, h, hq, hk, hv, ho, hl);
    free(hq), free(ho), free(hl), free(hk), free(hv);
    return true;
}

static double check(harness_case *hc, const char *label, bool tally) {
    dc_case *c = (dc_case *)hc;
    const int64_t B = c->s.B, Lq = c->s.Lq, H = c->s.H, D = c->s.D;
    int64_t bad = 0, bad_lse = 0, outside = 0;
    double worst = 0;
    for (int64_t b = 0; b < B; b++)
        for (int64_t i = 0; i < Lq; i++)
            for (int64_t h = 0; h < H; h++) {
                int64_t r = (b * Lq + i) * H + h;
                for (int64_t d = 0; d < D; d++) {
                    double got = tu_get(&c->to, (int64_t[]){b, i, h, d}), w = c->want[r * D + d];
                    if (!tu_close(got, w, ATOL, RTOL)) bad++;
                    double e = isnan(got) ? INFINITY : fabs(got - w);
                    if (e > worst) worst = e;
                }
                if (c->with_lse && !tu_close(c->lse[r], c->want_lse[r], LSE_ATOL, LSE_RTOL)) bad_lse++;
            }
    if (c->s.strided_q)
        for (int64_t e = 0; e < c->qmem; e++)
            if (e % c->row >= D && !isnan(c->out[e])) outside++;
    if (tally) {
        tu_check(bad == 0, "%s [%s]: %lld out elements off (worst %.3g)", c->base.name, label, (long long)bad, worst);
        tu_check(bad_lse == 0, "%s [%s]: %lld lse off", c->base.name, label, (long long)bad_lse);
        tu_check(outside == 0, "%s [%s]: %lld writes outside the out view", c->base.name, label, (long long)outside);
    }
    return worst;
}

static void teardown(harness_case *hc) {
    dc_case *c = (dc_case *)hc;
    free(c->k), free(c->v), free(c->q), free(c->out), free(c->lse), free(c->table), free(c->want), free(c->want_lse);
    c->k = c->v = NULL;
    c->q = c->out = c->lse = NULL;
    c->table = NULL;
    c->want = c->want_lse = NULL;
}

static const harness_ops decode_ops = {.op = "decode", HARNESS_CASE_CALLBACKS};

harness_case *attn_decode_case(const attn_decode_spec *s) {
    dc_case *c = harness_case_new(sizeof *c, &decode_ops, s->name, s->threads, HARNESS_CEIL_READ_BW);
    c->base.tokens = max_seqlen(s);
    c->s = *s;
    c->s.name = c->base.name; /* the caller's name may not outlive this call */
    c->paged = s->block_size > 0;
    c->with_lse = s->with_lse && s->p.score != LA_SCORE_SIGMOID;
    if (c->paged) {
        int64_t maxlen = max_seqlen(s) > 0 ? max_seqlen(s) : 1;
        c->blocks_per_seq = (maxlen + s->block_size - 1) / s->block_size + 1; /* one spare */
        c->num_blocks = s->B * c->blocks_per_seq + 3;                         /* some never used */
        c->kshape[0] = c->num_blocks, c->kshape[1] = s->block_size;
    } else {
        c->kshape[0] = s->B, c->kshape[1] = s->cap;
    }
    c->kshape[2] = s->Hkv, c->kshape[3] = s->D;
    c->row = s->strided_q ? s->D + 8 : s->D;
    c->qmem = s->B * s->Lq * s->H * c->row;
    return &c->base;
}
