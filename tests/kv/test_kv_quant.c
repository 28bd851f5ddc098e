/* Quantised KV pages (la_kv_cache with quant = LA_KV_Q8 / LA_KV_Q4):
 *  - round trip: every entry read back is within its group's bound of what
 *    was appended (keys per channel over key groups, values per token over
 *    channel groups), the most recent quant_window entries exactly;
 *    positions kept; bytes accounted as the header states;
 *  - decode straight over the codes (la_kv_cache_decode) at every SIMD
 *    level against a float64 reference over the dequantised entries
 *    (la_kv_cache_read), GQA, Lq 1 and 3, causal or not, ragged heads after
 *    compaction, lengths across the 256-key split points; outputs poisoned;
 *  - compaction: random drops keep positions, whole groups move bit for
 *    bit, the rest within one more rounding; streaming drops whole groups
 *    and so changes no kept entry;
 *  - bad parameters and calls rejected with their status and a message. */
#include "kv_cases.h"
#include "longattn.h"
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static bool quick;

typedef struct {
    la_kv_cache_params p;
    float *k, *v;   /* [layers][heads][seqs][max_tokens][D] as appended (f32) */
    int64_t *len;
} dense;

static int64_t at(const dense *d, int64_t l, int64_t h, int64_t s) {
    return (l * d->p.n_kv_heads + h) * d->p.max_seqs + s;
}
static int levels(const la_kv_cache_params *p) { return p->quant == LA_KV_Q8 ? 255 : 15; }

/* The round-trip bound of x against a group whose true values span
 * [mn, mx]: half a step of the f16 scale, plus the f16 rounding of the
 * (scale, zero) pair (2^-11 relative, taken as 2^-10 with margin). */
static double bound(const la_kv_cache_params *p, double mn, double mx) {
    const double range = mx - mn, big = fmax(fabs(mn), fabs(mx));
    return 0.5 * range / levels(p) * (1 + 0x1p-10) + 0x1p-10 * (range + big) + 1e-7;
}

/* Keys: per channel over slots [g * kg, (g + 1) * kg) of want; values: per
 * token over channel groups. got vs want for n entries of one head, D wide.
 * Returns the worst excess over the bound (<= 0 passes) and the largest error. */
static double check_entries(const la_kv_cache_params *p, const float *want_k, const float *want_v, const float *got_k,
                            const float *got_v, int64_t n, double *max_err) {
    const int64_t D = p->head_dim, kg = p->quant_key_group, vg = p->quant_value_group;
    double worst = -1;
    for (int64_t g0 = 0; g0 < n; g0 += kg)
        for (int64_t d = 0; d < D; d++) {
            const int64_t g1 = g0 + kg < n ? g0 + kg : n;
            double mn = INFINITY, mx = -INFINITY;
            for (int64_t t = g0; t < g1; t++) mn = fmin(mn, want_k[t * D + d]), mx = fmax(mx, want_k[t * D + d]);
            for (int64_t t = g0; t < g1; t++) {
                const double e = fabs((double)got_k[t * D + d] - want_k[t * D + d]);
                *max_err = fmax(*max_err, e);
                worst = fmax(worst, e - bound(p, mn, mx));
            }
        }
    for (int64_t t = 0; t < n; t++)
        for (int64_t g = 0; g < D; g += vg) {
            double mn = INFINITY, mx = -INFINITY;
            for (int64_t d = g; d < g + vg; d++) mn = fmin(mn, want_v[t * D + d]), mx = fmax(mx, want_v[t * D + d]);
            for (int64_t d = g; d < g + vg; d++) {
                const double e = fabs((double)got_v[t * D + d] - want_v[t * D + d]);
                *max_err = fmax(*max_err, e);
                worst = fmax(worst, e - bound(p, mn, mx));
            }
        }
    return worst;
}

static int64_t qlen_of(const la_kv_cache_params *p, int64_t len) {
    const int64_t over = len - p->quant_window - p->quant_key_group;
    return over < 0 ? 0 : (over / p->quant_key_group + 1) * p->quant_key_group;
}

static size_t want_bytes(const la_kv_cache_params *p, const int64_t *qlens, const int64_t *lens, int64_t n) {
    const size_t D = (size_t)p->head_dim, ps = (size_t)p->page_size, code = D * (p->quant == LA_KV_Q8 ? 8 : 4) / 8;
    const size_t kpage = code * ps + ps / (size_t)p->quant_key_group * D * 4;
    const size_t vpage = code * ps + ps * (D / (size_t)p->quant_value_group) * 4;
    const size_t window = (size_t)(p->quant_window + 2 * p->quant_key_group) * D * 4 * 2;
    size_t b = 0;
    for (int64_t i = 0; i < n; i++)
        b += (size_t)((qlens[i] + p->page_size - 1) / p->page_size) * (kpage + vpage) + (lens[i] ? window : 0);
    return b;
}

/* Append random chunks to every (layer, seq); check the round trip. */
static void fill_and_check(la_kv_cache *c, la_kv_cache *twin, dense *d, uint64_t *rng, int64_t target) {
    const la_kv_cache_params *p = &d->p;
    const int64_t H = p->n_kv_heads, D = p->head_dim, T = p->max_tokens;
    float *k = tu_alloc(sizeof(float) * (size_t)(T * H * D)), *v = tu_alloc(sizeof(float) * (size_t)(T * H * D));
    int32_t *pos = tu_alloc(sizeof(int32_t) * (size_t)T);
    for (int64_t l = 0; l < p->n_layers; l++)
        for (int64_t s = 0; s < p->max_seqs; s++)
            while (d->len[at(d, l, 0, s)] < target) {
                const int64_t len = d->len[at(d, l, 0, s)];
                int64_t n = tu_randint(rng, 1, 40);
                if (n > target - len) n = target - len;
                /* channels of different scales, as real keys have (outlier channels) */
                for (int64_t i = 0; i < n * H * D; i++) {
                    const double sc = 1 + 4 * ((i % D) % 5 == 0);
                    k[i] = (float)tu_uniform(rng, -sc, sc);
                    v[i] = (float)tu_uniform(rng, -2, 2);
                }
                for (int64_t i = 0; i < n; i++) pos[i] = (int32_t)(3 * (len + i) + 1);
                TU_EXPECT_STATUS(la_kv_cache_append(c, l, s, n, k, v, pos), LA_OK);
                if (twin) TU_EXPECT_STATUS(la_kv_cache_append(twin, l, s, n, k, v, pos), LA_OK);
                for (int64_t h = 0; h < H; h++) {
                    for (int64_t i = 0; i < n; i++) {
                        memcpy(d->k + (at(d, l, h, s) * T + len + i) * D, k + (i * H + h) * D, sizeof(float) * (size_t)D);
                        memcpy(d->v + (at(d, l, h, s) * T + len + i) * D, v + (i * H + h) * D, sizeof(float) * (size_t)D);
                    }
                    d->len[at(d, l, h, s)] += n;
                }
            }
    double worst = -1, max_err = 0;
    int64_t bad = 0;
    const int64_t nreg = p->n_layers * H * p->max_seqs;
    int64_t *qlens = tu_alloc(sizeof(int64_t) * (size_t)nreg);
    for (int64_t l = 0; l < p->n_layers; l++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t s = 0; s < p->max_seqs; s++) {
                const int64_t n = d->len[at(d, l, h, s)], W = p->quant_window < n ? p->quant_window : n;
                qlens[at(d, l, h, s)] = qlen_of(p, n);
                bad += la_kv_cache_len(c, l, h, s) != n;
                tu_poison(k, LA_F32, n * D), tu_poison(v, LA_F32, n * D);
                TU_EXPECT_STATUS(la_kv_cache_read(c, l, h, s, 0, n, k, v), LA_OK);
                const float *wk = d->k + at(d, l, h, s) * T * D, *wv = d->v + at(d, l, h, s) * T * D;
                worst = fmax(worst, check_entries(p, wk, wv, k, v, n, &max_err));
                /* the window: exact */
                bad += memcmp(k + (n - W) * D, wk + (n - W) * D, sizeof(float) * (size_t)(W * D)) != 0;
                bad += memcmp(v + (n - W) * D, wv + (n - W) * D, sizeof(float) * (size_t)(W * D)) != 0;
                const int32_t *pp;
                int64_t np;
                TU_EXPECT_STATUS(la_kv_cache_positions(c, l, h, s, &pp, &np), LA_OK);
                for (int64_t i = 0; i < np; i++) bad += pp[i] != 3 * i + 1;
            }
    tu_check(bad == 0 && worst <= 0, "q%d round trip: %lld mismatches (lengths, window, positions), worst excess over "
             "the bound %.3g", levels(p) == 255 ? 8 : 4, (long long)bad, worst);
    /* the bound is tight enough to mean something: int8's error is about range / 510 */
    tu_check(max_err > 0 && max_err < (p->quant == LA_KV_Q8 ? 0.02 : 0.4), "q%d: largest round-trip error %.3g",
             levels(p) == 255 ? 8 : 4, max_err);
    const size_t want = want_bytes(p, qlens, d->len, nreg);
    tu_check(la_kv_cache_bytes(c) == want, "q%d: %zu bytes accounted, want %zu", levels(p) == 255 ? 8 : 4,
             la_kv_cache_bytes(c), want);
    free(k), free(v), free(pos), free(qlens);
}

/* float64 attention of q rows over one head's dequantised entries. */
static void ref_decode(const float *q, int64_t Lq, int64_t G, const float *k, const float *v, int64_t n, int64_t D,
                       double scale, bool causal, double *out, double *lse) {
    double *s = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
    for (int64_t g = 0; g < G; g++)
        for (int64_t i = 0; i < Lq; i++) {
            const float *qr = q + (g * Lq + i) * D; /* caller's row order: (g, i) */
            int64_t hi = causal ? n - Lq + i + 1 : n;
            hi = hi < 0 ? 0 : hi > n ? n : hi;
            double mx = -INFINITY, z = 0;
            for (int64_t t = 0; t < hi; t++) {
                double a = 0;
                for (int64_t e = 0; e < D; e++) a += (double)qr[e] * k[t * D + e];
                s[t] = a * scale;
                mx = fmax(mx, s[t]);
            }
            double *o = out + (g * Lq + i) * D;
            for (int64_t e = 0; e < D; e++) o[e] = 0;
            for (int64_t t = 0; t < hi; t++) {
                const double w = exp(s[t] - mx);
                z += w;
                for (int64_t e = 0; e < D; e++) o[e] += w * v[t * D + e];
            }
            for (int64_t e = 0; e < D; e++) o[e] = hi ? o[e] / z : 0;
            lse[g * Lq + i] = hi ? mx + log(z) : -INFINITY;
        }
    free(s);
}

/* la_kv_cache_decode at every SIMD level vs the reference over
 * la_kv_cache_read; twin (or NULL) holds the same entries with the other
 * quant_exact_queries and is checked on the same queries. */
static void check_decode(la_context *ctx, const la_kv_cache *c, const la_kv_cache *twin, int64_t layer, uint64_t *rng,
                         const char *when) {
    const la_kv_cache_params *p = la_kv_cache_params_of(c);
    const int64_t Hkv = p->n_kv_heads, G = 2, H = Hkv * G, D = p->head_dim, B = p->max_seqs, T = p->max_tokens;
    const int levels = p->quant == LA_KV_Q8 ? 255 : 15;
    /* whether AVX-512 runs take the int8 q.k: the chunk passes' formats
     * (key groups of whole 16-token blocks, rows and value groups of whole
     * vectors) on a CPU with VNNI and VBMI */
    const bool vq_cpu = __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vbmi");
    const bool vq_format = p->quant_key_group % 16 == 0 && D % 16 == 0 && p->quant_value_group % 16 == 0;
    la_simd lv[LA_SIMD_COUNT];
    const int nlv = tu_simd_levels(lv);
    float *kd = tu_alloc(sizeof(float) * (size_t)(T * D)), *vd = tu_alloc(sizeof(float) * (size_t)(T * D));
    for (int64_t Lq = 1; Lq <= 3; Lq += 2)
        for (int causal = 0; causal < 2; causal++) {
            const int64_t nq = B * Lq * H * D;
            float *q = tu_alloc(sizeof(float) * (size_t)nq), *o = tu_alloc(sizeof(float) * (size_t)nq);
            float *o2 = tu_alloc(sizeof(float) * (size_t)nq);
            float *l = tu_alloc(sizeof(float) * (size_t)(B * Lq * H));
            double *ro = tu_alloc(sizeof(double) * (size_t)nq), *rl = tu_alloc(sizeof(double) * (size_t)(B * Lq * H));
            /* per output row: the int8 queries' score bound, its values' half spread, the 8-bit weights'
             * share (int8 pages) and its value groups' half spread */
            double *dsc = tu_alloc(sizeof(double) * (size_t)(B * Lq * H)), *vhalf = tu_alloc(sizeof(double) * (size_t)(B * H * D));
            double *wsh = tu_alloc(sizeof(double) * (size_t)(B * Lq * H)), *ghalf = tu_alloc(sizeof(double) * (size_t)(B * H * D));
            float *qh = tu_alloc(sizeof(float) * (size_t)(G * Lq * D));
            double *oh = tu_alloc(sizeof(double) * (size_t)(G * Lq * D)), *lh = tu_alloc(sizeof(double) * (size_t)(G * Lq));
            tu_fill(rng, q, LA_F32, nq, -1, 1);
            const double scale = 1 / sqrt((double)D);
            for (int64_t b = 0; b < B; b++)
                for (int64_t hk = 0; hk < Hkv; hk++) {
                    const int64_t n = la_kv_cache_len(c, layer, hk, b);
                    TU_EXPECT_STATUS(la_kv_cache_read(c, layer, hk, b, 0, n, kd, vd), LA_OK);
                    for (int64_t g = 0; g < G; g++)
                        for (int64_t i = 0; i < Lq; i++)
                            memcpy(qh + (g * Lq + i) * D, q + ((b * Lq + i) * H + hk * G + g) * D, sizeof(float) * (size_t)D);
                    ref_decode(qh, Lq, G, kd, vd, n, D, scale, causal, oh, lh);
                    for (int64_t g = 0; g < G; g++)
                        for (int64_t i = 0; i < Lq; i++) {
                            memcpy(ro + ((b * Lq + i) * H + hk * G + g) * D, oh + (g * Lq + i) * D, sizeof(double) * (size_t)D);
                            rl[(b * Lq + i) * H + hk * G + g] = lh[g * Lq + i];
                            const int64_t row = (b * Lq + i) * H + hk * G + g;
                            dsc[row] = kvq_int8_query_bound(qh + (g * Lq + i) * D, kd, n, D, scale, levels);
                            /* the row's visible entries, as ref_decode */
                            int64_t vis = causal ? n - Lq + i + 1 : n;
                            vis = vis < 0 ? 0 : vis > n ? n : vis;
                            wsh[row] = p->quant == LA_KV_Q8 ? exp(2 * dsc[row]) *
                                                                  kvq_int8_weight_share(qh + (g * Lq + i) * D, kd, vis, D, scale)
                                                            : 0;
                        }
                    const int64_t vg = p->quant_value_group;
                    double gmn = INFINITY, gmx = -INFINITY;
                    for (int64_t d = 0; d < D; d++) {
                        double mn = INFINITY, mx = -INFINITY;
                        for (int64_t t = 0; t < n; t++) mn = fmin(mn, vd[t * D + d]), mx = fmax(mx, vd[t * D + d]);
                        for (int64_t g = 0; g < G; g++) vhalf[(b * H + hk * G + g) * D + d] = n ? (mx - mn) / 2 : 0;
                        /* the value group's range over its channels, stored at its last one for all of them */
                        gmn = d % vg ? fmin(gmn, mn) : mn, gmx = d % vg ? fmax(gmx, mx) : mx;
                        if (d % vg == vg - 1)
                            for (int64_t e = d + 1 - vg; e <= d; e++)
                                for (int64_t g = 0; g < G; g++) ghalf[(b * H + hk * G + g) * D + e] = n ? (gmx - gmn) / 2 : 0;
                    }
                }
            la_attention_params ap = la_attention_params_default();
            ap.causal = causal;
            la_tensor qt = la_tensor_contiguous(q, LA_F32, 4, (int64_t[]){B, Lq, H, D});
            la_tensor ot = la_tensor_contiguous(o, LA_F32, 4, (int64_t[]){B, Lq, H, D});
            la_tensor ot2 = la_tensor_contiguous(o2, LA_F32, 4, (int64_t[]){B, Lq, H, D});
            la_tensor lt = la_tensor_contiguous(l, LA_F32, 3, (int64_t[]){B, Lq, H});
            for (int li = 0; li < nlv; li++)
                for (int which = 0; which < (twin ? 2 : 1); which++) {
                    const la_kv_cache *cc = which ? twin : c;
                    const bool exact = la_kv_cache_params_of(cc)->quant_exact_queries || p->quant == LA_KV_QUANT_NONE;
                    la_context_set_simd(ctx, lv[li]);
                    float *out = which ? o2 : o;
                    tu_poison(out, LA_F32, nq), tu_poison(l, LA_F32, B * Lq * H);
                    TU_EXPECT_STATUS(la_kv_cache_decode(ctx, &ap, cc, layer, 0, &qt, which ? &ot2 : &ot, &lt), LA_OK);
                    double worst = 0, rel2 = 0;
                    int64_t bad = 0;
                    for (int64_t i = 0; i < nq; i++) {
                        /* exact queries: 2e-5 abs + rel, f32 sums over at most a few thousand keys. int8
                         * queries: scores within Delta = dsc of the exact ones (kvq_int8_query_bound) move each
                         * softmax weight by a factor within e^(+-2 Delta), so the output by at most
                         * (e^(2 Delta) - 1) times half its values' spread (weights sum to 1 both ways),
                         * the lse by Delta; on int8 pages the weights rounded to 8 bits add at most wsh
                         * (kvq_int8_weight_share, with e^(2 Delta)) times half the value group's spread
                         * (1 + 2^-9: the f16 scales); plus the f32 slack */
                        const int64_t row = i / D, bh = (row / (Lq * H)) * H + row % H;
                        const double tol = exact ? 0 : expm1(2 * dsc[row]) * vhalf[bh * D + i % D] +
                                                            wsh[row] * ghalf[bh * D + i % D] * (1 + 0x1p-9);
                        bad += !tu_close(out[i], ro[i], 2e-5 + tol, 2e-5);
                        worst = fmax(worst, fabs(out[i] - ro[i]));
                        if (tol > 0) rel2 += pow((out[i] - ro[i]) / tol, 2);
                    }
                    for (int64_t i = 0; i < B * Lq * H; i++)
                        bad += !tu_close(l[i], rl[i], 2e-5 + (exact ? 0 : dsc[i]), 2e-5);
                    tu_check(bad == 0, "%s: decode (simd %d, Lq %lld, causal %d, %s queries) vs float64 over the "
                             "dequantised cache: %lld elements off, worst |diff| %.3g", when, (int)lv[li], (long long)Lq,
                             causal, exact ? "f32" : "int8", (long long)bad, worst);
                    /* int8 queries, statistically: the rounding errors are independent and about uniform on
                     * [-sq / 2, sq / 2] (mean square a third of the square) and |code - levels / 2| <= levels / 2,
                     * so a score's RMS error is at most Delta / sqrt(3 D), and the outputs' in units of their
                     * bound about that or less; the 8-bit weights' errors likewise (about their bound /
                     * sqrt(3 n) over n entries); 3 times it (a wrong gather gives errors of the bound's size) */
                    const double rms = sqrt(rel2 / (double)nq), lim = 3 / sqrt(3.0 * (double)D);
                    if (!exact) tu_check(rms <= lim, "%s: int8-query decode (simd %d): RMS error %.3g of the bound, "
                                         "want <= %.3g", when, (int)lv[li], rms, lim);
                }
            /* the int8 path is taken where it should be: the two caches' outputs differ (AVX-512 levels), and
             * are the same bits elsewhere (the f32 path both ways) */
            if (twin) {
                const bool vq = vq_cpu && vq_format && lv[nlv - 1] >= LA_SIMD_AVX512;
                tu_check(vq == (memcmp(o, o2, sizeof(float) * (size_t)nq) != 0), "%s: int8 and f32 queries give %s "
                         "outputs at simd %d (int8 q.k expected: %d)", when, vq ? "the same" : "different",
                         (int)lv[nlv - 1], (int)vq);
            }
            free(q), free(o), free(o2), free(l), free(ro), free(rl), free(dsc), free(vhalf), free(wsh), free(ghalf), free(qh),
                free(oh), free(lh);
        }
    la_context_set_simd(ctx, lv[nlv - 1]);
    free(kd), free(vd);
}

/* Random drops on one head; then streaming over a fresh layer. */
static void check_compaction(la_kv_cache *c, dense *d, uint64_t *rng) {
    const la_kv_cache_params *p = &d->p;
    const int64_t D = p->head_dim, T = p->max_tokens, n = la_kv_cache_len(c, 0, 1, 0);
    float *k0 = tu_alloc(sizeof(float) * (size_t)(T * D)), *v0 = tu_alloc(sizeof(float) * (size_t)(T * D));
    float *k1 = tu_alloc(sizeof(float) * (size_t)(T * D)), *v1 = tu_alloc(sizeof(float) * (size_t)(T * D));
    float *kw = tu_alloc(sizeof(float) * (size_t)(T * D)), *vw = tu_alloc(sizeof(float) * (size_t)(T * D));
    int32_t *slots = tu_alloc(sizeof(int32_t) * (size_t)T), *kept = tu_alloc(sizeof(int32_t) * (size_t)T);
    int32_t *pos0 = tu_alloc(sizeof(int32_t) * (size_t)T);
    TU_EXPECT_STATUS(la_kv_cache_read(c, 0, 1, 0, 0, n, k0, v0), LA_OK);
    const int32_t *pp;
    int64_t np;
    la_kv_cache_positions(c, 0, 1, 0, &pp, &np);
    memcpy(pos0, pp, sizeof(int32_t) * (size_t)np);
    /* drop one whole aligned group (moves later groups intact) and a few single entries past it */
    const int64_t kg = p->quant_key_group, gdrop = kg * tu_randint(rng, 1, 2);
    int64_t nd = 0, nk = 0;
    for (int64_t i = 0; i < n; i++) {
        const bool drop = (i >= gdrop && i < gdrop + kg) || (i > n / 2 && tu_uniform(rng, 0, 1) < 0.1);
        if (drop) slots[nd++] = (int32_t)i;
        else kept[nk++] = (int32_t)i;
    }
    TU_EXPECT_STATUS(la_kv_cache_compact(c, 0, 1, 0, slots, nd), LA_OK);
    tu_check(la_kv_cache_len(c, 0, 1, 0) == nk, "compaction kept %lld of %lld", (long long)la_kv_cache_len(c, 0, 1, 0),
             (long long)nk);
    TU_EXPECT_STATUS(la_kv_cache_read(c, 0, 1, 0, 0, nk, k1, v1), LA_OK);
    la_kv_cache_positions(c, 0, 1, 0, &pp, &np);
    int64_t bad = 0, moved_exact = 0;
    for (int64_t i = 0; i < nk; i++) {
        bad += pp[i] != pos0[kept[i]];
        memcpy(kw + i * D, k0 + kept[i] * D, sizeof(float) * (size_t)D);
        memcpy(vw + i * D, v0 + kept[i] * D, sizeof(float) * (size_t)D);
    }
    /* the groups before the first drop and whole groups after it: bit for bit */
    for (int64_t i = 0; i + kg <= n / 2 - kg; i += kg)
        moved_exact += !memcmp(k1 + i * D, kw + i * D, sizeof(float) * (size_t)(kg * D)) &&
                       !memcmp(v1 + i * D, vw + i * D, sizeof(float) * (size_t)(kg * D));
    double max_err = 0, worst = check_entries(p, kw, vw, k1, v1, nk, &max_err);
    tu_check(bad == 0 && worst <= 0 && moved_exact == (n / 2 - kg) / kg,
             "compaction: %lld positions wrong, worst excess %.3g over one more rounding, %lld of %lld early groups "
             "bit-identical", (long long)bad, worst, (long long)moved_exact, (long long)((n / 2 - kg) / kg));
    /* streaming on a quantised cache: whole groups only, nothing re-quantised */
    const int64_t nl = la_kv_cache_len(c, 1, 0, 0);
    TU_EXPECT_STATUS(la_kv_cache_read(c, 1, 0, 0, 0, nl, k0, v0), LA_OK);
    la_kv_policy pol;
    const int64_t budget = nl / 2;
    char text[64];
    snprintf(text, sizeof text, "streaming:%lld", (long long)budget);
    TU_EXPECT_STATUS(la_kv_policy_parse(text, &pol), LA_OK);
    TU_EXPECT_STATUS(la_kv_cache_apply_policy(c, &pol, 1, 0), LA_OK);
    const int64_t first = (pol.sinks + kg - 1) / kg * kg, ndrop = (nl - budget) / kg * kg, left = nl - ndrop;
    tu_check(la_kv_cache_len(c, 1, 0, 0) == left, "streaming on q: %lld entries, want %lld",
             (long long)la_kv_cache_len(c, 1, 0, 0), (long long)left);
    TU_EXPECT_STATUS(la_kv_cache_read(c, 1, 0, 0, 0, left, k1, v1), LA_OK);
    bool same = !memcmp(k1, k0, sizeof(float) * (size_t)(first * D)) &&
                !memcmp(k1 + first * D, k0 + (first + ndrop) * D, sizeof(float) * (size_t)((left - first) * D)) &&
                !memcmp(v1 + first * D, v0 + (first + ndrop) * D, sizeof(float) * (size_t)((left - first) * D));
    tu_check(same, "streaming on a quantised cache changed a kept entry (first %lld, dropped %lld)", (long long)first,
             (long long)ndrop);
    free(k0), free(v0), free(k1), free(v1), free(kw), free(vw), free(slots), free(kept), free(pos0);
}

static void run(la_context *ctx, la_kv_quant qk, int64_t D, int64_t page, int64_t kg, int64_t vg, int64_t W, int64_t T,
                uint64_t *rng) {
    la_kv_cache_params p = la_kv_cache_params_default();
    p.n_layers = 2, p.n_kv_heads = 3, p.head_dim = D, p.page_size = page, p.max_tokens = T, p.max_seqs = 2;
    p.quant = qk, p.quant_key_group = kg, p.quant_value_group = vg, p.quant_window = W;
    la_kv_cache *c = NULL, *cx = NULL; /* cx: the same entries, f32 queries */
    TU_EXPECT_STATUS(la_kv_cache_create(&p, &c), LA_OK);
    la_kv_cache_params px = p;
    px.quant_exact_queries = true;
    TU_EXPECT_STATUS(la_kv_cache_create(&px, &cx), LA_OK);
    if (!c || !cx) return;
    dense d = {.p = p};
    const size_t cells = (size_t)(p.n_layers * p.n_kv_heads * p.max_seqs);
    d.k = tu_alloc(sizeof(float) * cells * (size_t)(T * D));
    d.v = tu_alloc(sizeof(float) * cells * (size_t)(T * D));
    d.len = calloc(cells, sizeof(int64_t));
    fill_and_check(c, cx, &d, rng, T * 3 / 4);
    check_decode(ctx, c, cx, 0, rng, "full");
    check_compaction(c, &d, rng);
    check_decode(ctx, c, NULL, 0, rng, "ragged after compaction");
    /* seq 1 emptied: a sequence with no entries gives zeros and lse -inf */
    TU_EXPECT_STATUS(la_kv_cache_reset(c, 1), LA_OK);
    check_decode(ctx, c, NULL, 1, rng, "one empty sequence");
    la_kv_cache_destroy(c), la_kv_cache_destroy(cx);
    free(d.k), free(d.v), free(d.len);
}

/* Drops inside the window, before any group is quantised and after: the
 * window's entries stay exact, the quantised groups untouched. */
static void check_window_drops(void) {
    la_kv_cache_params p = la_kv_cache_params_default();
    p.head_dim = 8, p.page_size = 8, p.max_tokens = 40, p.quant = LA_KV_Q4, p.quant_key_group = 4;
    p.quant_value_group = 8, p.quant_window = 8;
    la_kv_cache *c = NULL;
    TU_EXPECT_STATUS(la_kv_cache_create(&p, &c), LA_OK);
    if (!c) return;
    float k[30 * 8], v[30 * 8], before[30 * 8], after[30 * 8], vb[30 * 8], va[30 * 8];
    int32_t pos[30];
    for (int i = 0; i < 30 * 8; i++) k[i] = (float)(i % 13) * 0.37f - 2, v[i] = (float)(i % 7) * 0.5f - 1;
    for (int i = 0; i < 30; i++) pos[i] = i;
    /* 10 entries: all in the window (a group is quantised at 12) */
    TU_EXPECT_STATUS(la_kv_cache_append(c, 0, 0, 10, k, v, pos), LA_OK);
    const int32_t drop1[] = {5};
    TU_EXPECT_STATUS(la_kv_cache_compact(c, 0, 0, 0, drop1, 1), LA_OK);
    TU_EXPECT_STATUS(la_kv_cache_read(c, 0, 0, 0, 0, 9, after, va), LA_OK);
    bool exact = !memcmp(after, k, sizeof(float) * 5 * 8) && !memcmp(after + 5 * 8, k + 6 * 8, sizeof(float) * 4 * 8) &&
                 !memcmp(va, v, sizeof(float) * 5 * 8) && !memcmp(va + 5 * 8, v + 6 * 8, sizeof(float) * 4 * 8);
    tu_check(exact, "a drop inside the window of an unquantised head changed kept entries");
    /* 29 entries: groups quantised; drop the newest few (window only) */
    TU_EXPECT_STATUS(la_kv_cache_append(c, 0, 0, 20, k + 10 * 8, v + 10 * 8, pos + 10), LA_OK);
    const int64_t n = la_kv_cache_len(c, 0, 0, 0);
    TU_EXPECT_STATUS(la_kv_cache_read(c, 0, 0, 0, 0, n, before, vb), LA_OK);
    const int32_t drop2[] = {(int32_t)n - 3, (int32_t)n - 1};
    TU_EXPECT_STATUS(la_kv_cache_compact(c, 0, 0, 0, drop2, 2), LA_OK);
    TU_EXPECT_STATUS(la_kv_cache_read(c, 0, 0, 0, 0, n - 2, after, va), LA_OK);
    exact = !memcmp(after, before, sizeof(float) * (size_t)((n - 3) * 8)) &&
            !memcmp(after + (n - 3) * 8, before + (n - 2) * 8, sizeof(float) * 8) &&
            !memcmp(va, vb, sizeof(float) * (size_t)((n - 3) * 8));
    tu_check(exact, "a drop inside the window changed a kept entry (quantised groups must stay bit for bit)");
    la_kv_cache_destroy(c);
}

/* la_kv_cache_decode over float pages: all heads at once, and per head
 * once compaction made them ragged. */
static void check_float_decode(la_context *ctx, uint64_t *rng) {
    la_kv_cache_params p = la_kv_cache_params_default();
    p.n_kv_heads = 3, p.head_dim = 32, p.page_size = 16, p.max_tokens = 300, p.max_seqs = 2, p.dtype = LA_F16;
    la_kv_cache *c = NULL;
    TU_EXPECT_STATUS(la_kv_cache_create(&p, &c), LA_OK);
    if (!c) return;
    const int64_t n = 290, row = p.n_kv_heads * p.head_dim;
    float *k = tu_alloc(sizeof(float) * (size_t)(n * row)), *v = tu_alloc(sizeof(float) * (size_t)(n * row));
    int32_t pos[290], slots[100];
    for (int64_t s = 0; s < 2; s++) {
        tu_fill(rng, k, LA_F32, n * row, -1, 1), tu_fill(rng, v, LA_F32, n * row, -1, 1);
        for (int i = 0; i < n; i++) pos[i] = i;
        TU_EXPECT_STATUS(la_kv_cache_append(c, 0, s, n - 7 * s, k, v, pos), LA_OK);
    }
    check_decode(ctx, c, NULL, 0, rng, "f16 pages");
    for (int i = 0; i < 100; i++) slots[i] = 2 * i + 1;
    TU_EXPECT_STATUS(la_kv_cache_compact(c, 0, 1, 0, slots, 100), LA_OK);
    TU_EXPECT_STATUS(la_kv_cache_compact(c, 0, 2, 1, slots, 37), LA_OK);
    check_decode(ctx, c, NULL, 0, rng, "f16 pages, ragged heads");
    la_kv_cache_destroy(c);
    free(k), free(v);
}

static void check_errors(la_context *ctx) {
    la_kv_cache_params p = la_kv_cache_params_default();
    p.quant = LA_KV_Q8;
    la_kv_cache *c = NULL;
    la_kv_cache_params b;
#define BAD(stmt, want)                                                                         \
    do {                                                                                        \
        b = p;                                                                                  \
        stmt;                                                                                   \
        la_status st_ = la_kv_cache_create(&b, &c);                                             \
        tu_check(st_ == (want) && !c && la_last_error()[0], "create with %s gave %s (%s)", #stmt, \
                 la_status_name(st_), la_last_error());                                         \
    } while (0)
    BAD(b.quant_key_group = 0, LA_ERR_ARGUMENT);
    BAD(b.quant_key_group = 48, LA_ERR_ARGUMENT);  /* does not divide page_size 256 */
    BAD(b.quant_key_group = 512, LA_ERR_ARGUMENT); /* above 256 */
    BAD(b.quant_value_group = 0, LA_ERR_ARGUMENT);
    BAD(b.quant_value_group = 24, LA_ERR_ARGUMENT); /* does not divide head_dim 64 */
    BAD(b.quant_window = -1, LA_ERR_ARGUMENT);
    BAD(b.quant = (la_kv_quant)5, LA_ERR_ARGUMENT);
    BAD(b.head_dim = 12, LA_ERR_SHAPE);
#undef BAD
    TU_EXPECT_STATUS(la_kv_cache_create(&p, &c), LA_OK);
    float k[64], v[64], q[2 * 64], o[2 * 64];
    int32_t pos = 0;
    for (int i = 0; i < 64; i++) k[i] = v[i] = (float)i;
    for (int i = 0; i < 128; i++) q[i] = 0.01f * (float)i;
    TU_EXPECT_STATUS(la_kv_cache_append(c, 0, 0, 1, k, v, &pos), LA_OK);
    la_kv_view view;
    TU_EXPECT_STATUS(la_kv_cache_view(c, 0, -1, 0, 1, &view), LA_ERR_UNSUPPORTED);
    la_attention_params ap = la_attention_params_default();
    la_tensor qt = la_tensor_contiguous(q, LA_F32, 4, (int64_t[]){1, 1, 2, 64});
    la_tensor ot = la_tensor_contiguous(o, LA_F32, 4, (int64_t[]){1, 1, 2, 64});
    TU_EXPECT_STATUS(la_kv_cache_decode(ctx, &ap, c, 0, 0, &qt, &ot, NULL), LA_OK);
    ap.window_left = 4;
    TU_EXPECT_STATUS(la_kv_cache_decode(ctx, &ap, c, 0, 0, &qt, &ot, NULL), LA_ERR_UNSUPPORTED);
    ap = la_attention_params_default();
    ap.score = LA_SCORE_SIGMOID;
    TU_EXPECT_STATUS(la_kv_cache_decode(ctx, &ap, c, 0, 0, &qt, &ot, NULL), LA_ERR_UNSUPPORTED);
    ap = la_attention_params_default();
    TU_EXPECT_STATUS(la_kv_cache_decode(ctx, &ap, c, 1, 0, &qt, &ot, NULL), LA_ERR_ARGUMENT);  /* layer */
    TU_EXPECT_STATUS(la_kv_cache_decode(ctx, &ap, c, 0, 1, &qt, &ot, NULL), LA_ERR_ARGUMENT);  /* seq */
    TU_EXPECT_STATUS(la_kv_cache_decode(ctx, &ap, c, 0, 0, NULL, &ot, NULL), LA_ERR_NULL);
    TU_EXPECT_STATUS(la_kv_cache_decode(ctx, &ap, NULL, 0, 0, &qt, &ot, NULL), LA_ERR_NULL);
    la_tensor q32 = la_tensor_contiguous(q, LA_F32, 4, (int64_t[]){1, 1, 4, 32});
    la_tensor o32 = la_tensor_contiguous(o, LA_F32, 4, (int64_t[]){1, 1, 4, 32});
    TU_EXPECT_STATUS(la_kv_cache_decode(ctx, &ap, c, 0, 0, &q32, &o32, NULL), LA_ERR_SHAPE); /* head_dim */
    la_tensor qh = la_tensor_contiguous(q, LA_F16, 4, (int64_t[]){1, 1, 2, 64});
    TU_EXPECT_STATUS(la_kv_cache_decode(ctx, &ap, c, 0, 0, &qh, &ot, NULL), LA_ERR_DTYPE);
    la_tensor o1 = la_tensor_contiguous(o, LA_F32, 4, (int64_t[]){1, 1, 1, 64});
    TU_EXPECT_STATUS(la_kv_cache_decode(ctx, &ap, c, 0, 0, &qt, &o1, NULL), LA_ERR_SHAPE);
    TU_EXPECT_STATUS(la_kv_cache_decode(ctx, &ap, c, 0, 0, &qt, &qt, NULL), LA_ERR_ARGUMENT); /* out over q */
    la_kv_cache_destroy(c);
}

int main(void) {
    uint64_t rng = tu_seed();
    const char *qe = getenv("LONGATTN_TEST_QUICK");
    quick = qe && atoi(qe) != 0;
    la_context *ctx;
    la_context_create(&ctx, 2);
    /* small awkward shapes: groups of 4 tokens in pages of 8, value groups of 8 channels, window 5 */
    run(ctx, LA_KV_Q8, 16, 8, 4, 8, 5, 61, &rng);
    run(ctx, LA_KV_Q4, 24, 8, 4, 8, 5, 61, &rng);
    /* across the 256-key split points (3 chunks): the model's shapes */
    const int64_t T = quick ? 300 : 800;
    run(ctx, LA_KV_Q8, 64, 64, 32, 32, 32, T, &rng);
    run(ctx, LA_KV_Q4, 64, 64, 32, 16, 0, T, &rng);
    /* channel-major key groups on the chunk passes: groups that do not
     * divide the 256-key chunk (a chunk starts inside a group: its first
     * run folds the group's scales again), and groups of 64 tokens (two
     * q.k runs per group, the second without a fold) */
    run(ctx, LA_KV_Q8, 32, 48, 24, 16, 9, quick ? 300 : 600, &rng);
    run(ctx, LA_KV_Q4, 32, 80, 40, 32, 3, quick ? 300 : 700, &rng);
    run(ctx, LA_KV_Q8, 64, 128, 64, 32, 32, quick ? 300 : 700, &rng);
    /* the bench's head_dim 128 (the kernel's row width specialised for 128), value groups of one vector and of two */
    run(ctx, LA_KV_Q8, 128, 64, 32, 32, 32, quick ? 200 : 600, &rng);
    run(ctx, LA_KV_Q4, 128, 32, 16, 16, 7, quick ? 200 : 600, &rng);
    /* the bench's case (longattn bench kvquant) in check mode: every cache type, GQA 4:1, past one split */
    harness_list list = {0};
    kv_decode_sweep_cases(&list, &(kv_decode_sweep){.L = (const int64_t[]){quick ? 300 : 700}, .nL = 1, .H = 8,
                                                   .Hkv = 2, .D = 64});
    /* the real model's shape (SmolLM2-135M: 9 query heads over 3 KV heads,
     * D 64; 3 rows per KV head, one short group of the 4-row block) on
     * pages of 256: lengths 1, page - 1, page + 1 and one past two split
     * points that is no multiple of any tile, every cache type, 1 and 2
     * threads */
    const int64_t lens[] = {1, 255, 257, quick ? 300 : 781};
    const struct { la_kv_quant q; la_dtype t; } model_types[] = {
        {LA_KV_QUANT_NONE, LA_F32}, {LA_KV_QUANT_NONE, LA_F16}, {LA_KV_Q8, LA_F32}, {LA_KV_Q4, LA_F32}};
    for (int ti = 0; ti < 4; ti++)
        for (int li = 0; li < 4; li++) {
            char name[96];
            snprintf(name, sizeof name, "model shape 9/3 D64 %s L=%lld",
                     model_types[ti].q == LA_KV_Q8 ? "q8" : model_types[ti].q == LA_KV_Q4 ? "q4"
                                                                                       : la_dtype_name(model_types[ti].t),
                     (long long)lens[li]);
            harness_add(&list, kv_decode_case(&(kv_decode_spec){.name = name, .quant = model_types[ti].q,
                                                                .dtype = model_types[ti].t, .L = lens[li], .H = 9,
                                                                .Hkv = 3, .D = 64, .threads = 1 + li % 2}));
        }
    harness_check(&list, &rng);
    harness_list_free(&list);
    check_window_drops();
    check_float_decode(ctx, &rng);
    check_errors(ctx);
    la_context_destroy(ctx);
    return tu_finish();
}
