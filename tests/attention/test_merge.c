/* la_attention_merge against the float64 reference: 2 to 8 parts of mixed
 * f32/bf16/f16 into f32/bf16/f16, dense [B, L, H, D] and packed [T, H, D],
 * contiguous and strided views, awkward sizes, parts and rows with lse -inf
 * (and NaN/+inf, whose result is NaN), lse NULL, merging in place into one
 * part (also out of one interleaved buffer), at every SIMD level; merging
 * the forward over key splits equals the forward over all keys; bad
 * inputs, each with its own status and no write; and the overlap test
 * behind the aliasing rule against marking bytes. */
#include "attention_ref.h"
#include "ops/validate.h"
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PARTS 8

static la_simd levels[LA_SIMD_COUNT];
static int n_levels;

/* Tolerance |got - want| <= atol + rtol |want| for merged outputs. The
 * reference reads the parts' stored values, so only the kernel's f32
 * arithmetic differs (weights exp(lse_i - lse) within 2 ulp, at most 8
 * products of values |x| <= 1 summed: ~1e-6 at worst), and then the output
 * dtype's rounding to nearest: half an ulp, at worst 2^-8 = 3.9e-3 relative
 * for bf16 and 2^-11 = 4.9e-4 for f16 (truncating bf16 would miss by up to
 * 2^-7 and fail). */
#define OUT_ATOL 4e-6
static double out_rtol(la_dtype t) { return t == LA_BF16 ? 4e-3 : t == LA_F16 ? 1e-3 : 1e-5; }
/* Merged lse = max + log(sum), |lse| <= ~85 here: an f32 ulp there is 8e-6. */
#define LSE_ATOL 2e-5
#define LSE_RTOL 1e-6

enum { NEG_NONE, NEG_ROWS, NEG_PARTS, NEG_ALL_SOME_ROWS, NEG_ALL, NEG_NAN_INF, NEG_MODES };
static const char *const neg_names[] = {"no -inf", "-inf rows", "-inf parts", "all -inf some rows", "all -inf",
                                        "NaN/+inf lse"};

typedef struct {
    int n;
    int64_t B, L, H, D; /* B = 0: packed [T = L, H, D] */
    la_dtype part_dt[MAX_PARTS], out_dt;
    bool strided, with_lse, in_place;
    int neg;
    double spread; /* lses uniform in [-spread, spread] */
    int threads;
} mg_case;

static int ndim_of(const mg_case *c) { return c->B ? 4 : 3; }

/* Index of element d of row r (rows ordered sequence, token, head). */
static void index_of(const mg_case *c, int64_t r, int64_t d, int64_t *idx) {
    const int64_t h = r % c->H, t = r / c->H % c->L, b = r / c->H / c->L;
    if (c->B) idx[0] = b, idx[1] = t, idx[2] = h, idx[3] = d;
    else idx[0] = t, idx[1] = h, idx[2] = d;
}

static char *elem_ptr(const la_tensor *t, const int64_t *idx) {
    int64_t off = 0;
    for (int i = 0; i < t->ndim; i++) off += idx[i] * t->stride[i];
    return (char *)t->data + off * (int64_t)la_dtype_size(t->dtype);
}

/* Elements of b's memory outside its view whose bytes differ from `before`. */
static int64_t changed_outside(const tu_buf *b, const unsigned char *before) {
    const size_t es = la_dtype_size(b->t.dtype);
    unsigned char *in = calloc(b->elems ? b->elems : 1, 1);
    int64_t n = la_tensor_numel(&b->t);
    for (int64_t e = 0; e < n; e++) {
        int64_t rem = e, off = 0;
        for (int i = b->t.ndim - 1; i >= 0; i--) {
            off += rem % b->t.shape[i] * b->t.stride[i];
            rem /= b->t.shape[i];
        }
        in[off] = 1;
    }
    int64_t changed = 0;
    for (size_t e = 0; e < b->elems; e++)
        if (!in[e] && memcmp((char *)b->t.data + e * es, before + e * es, es)) changed++;
    free(in);
    return changed;
}

static unsigned char *snapshot(const tu_buf *b) {
    size_t bytes = b->elems * la_dtype_size(b->t.dtype);
    unsigned char *s = tu_alloc(bytes);
    memcpy(s, b->t.data, bytes);
    return s;
}

static void run_case(uint64_t *rng, const mg_case *c, const char *name) {
    const int n = c->n, nd = ndim_of(c);
    const int64_t D = c->D, rows = (c->B ? c->B : 1) * c->L * c->H;
    int64_t shape[4], lshape[3];
    if (c->B) memcpy(shape, (int64_t[]){c->B, c->L, c->H, D}, sizeof shape);
    else memcpy(shape, (int64_t[]){c->L, c->H, D}, 3 * sizeof(int64_t));
    memcpy(lshape, shape, 3 * sizeof(int64_t));
    tu_buf po[MAX_PARTS], pl[MAX_PARTS];
    la_tensor outs[MAX_PARTS], lses[MAX_PARTS];
    double *ref_outs = tu_alloc(sizeof(double) * (size_t)(n * rows * D + 1));
    double *ref_lses = tu_alloc(sizeof(double) * (size_t)(n * rows + 1));
    for (int i = 0; i < n; i++) {
        po[i] = tu_buf_new(c->part_dt[i], nd, shape, c->strided, false);
        pl[i] = tu_buf_new(LA_F32, nd - 1, lshape, c->strided, true);
        tu_fill(rng, po[i].t.data, c->part_dt[i], (int64_t)po[i].elems, -1, 1);
        tu_fill(rng, pl[i].t.data, LA_F32, (int64_t)pl[i].elems, -c->spread, c->spread);
        outs[i] = po[i].t, lses[i] = pl[i].t;
    }
    /* lse patterns; a part row with lse -inf gets NaN values, which the
     * merge must not read */
    for (int64_t r = 0; r < rows; r++) {
        const bool all_row = c->neg == NEG_ALL || (c->neg == NEG_ALL_SOME_ROWS && tu_uniform(rng, 0, 1) < 0.3);
        const int special = c->neg == NEG_NAN_INF && r % 3 == 1 ? (int)tu_randint(rng, 0, n - 1) : -1;
        for (int i = 0; i < n; i++) {
            int64_t idx[4];
            index_of(c, r, 0, idx);
            float *l = (float *)elem_ptr(&lses[i], idx);
            bool neg = all_row || (c->neg == NEG_ROWS && tu_uniform(rng, 0, 1) < 0.25) ||
                       (c->neg == NEG_PARTS && (i == 1 || (i == n - 1 && n > 3))) ||
                       (c->neg == NEG_ALL_SOME_ROWS && tu_uniform(rng, 0, 1) < 0.2);
            if (neg) {
                *l = -INFINITY;
                tu_poison(elem_ptr(&outs[i], idx), c->part_dt[i], D);
            }
            if (i == special) *l = r % 2 ? NAN : INFINITY;
        }
    }
    for (int i = 0; i < n; i++)
        for (int64_t r = 0; r < rows; r++) {
            int64_t idx[4];
            index_of(c, r, 0, idx);
            ref_lses[i * rows + r] = tu_get(&lses[i], idx);
            for (int64_t d = 0; d < D; d++) {
                index_of(c, r, d, idx);
                ref_outs[(i * rows + r) * D + d] = tu_get(&outs[i], idx);
            }
        }
    double *want = tu_alloc(sizeof(double) * (size_t)(rows * D + 1));
    double *want_lse = tu_alloc(sizeof(double) * (size_t)(rows + 1));
    ref_attention_merge(n, rows, D, ref_outs, ref_lses, want, want_lse);

    /* the output: its own buffers, or part 0 itself (restored before each run) */
    tu_buf ob, lb;
    unsigned char *part0 = NULL, *lse0 = NULL;
    if (c->in_place) {
        ob = po[0], lb = pl[0];
        part0 = snapshot(&ob), lse0 = snapshot(&lb);
    } else {
        ob = tu_buf_new(c->out_dt, nd, shape, c->strided, false);
        lb = tu_buf_new(LA_F32, nd - 1, lshape, c->strided, true);
    }
    const la_dtype out_dt = ob.t.dtype;
    la_context *ctx;
    la_context_create(&ctx, c->threads);
    for (int li = 0; li < n_levels; li++) {
        la_context_set_simd(ctx, levels[li]);
        if (c->in_place) {
            memcpy(ob.t.data, part0, ob.elems * la_dtype_size(out_dt));
            memcpy(lb.t.data, lse0, lb.elems * sizeof(float));
        } else {
            tu_poison(ob.t.data, out_dt, (int64_t)ob.elems);
            tu_poison(lb.t.data, LA_F32, (int64_t)lb.elems);
        }
        unsigned char *before_o = snapshot(&ob), *before_l = snapshot(&lb);
        la_status s = la_attention_merge(ctx, n, outs, lses, &ob.t, c->with_lse ? &lb.t : NULL);
        tu_check(s == LA_OK, "%s [%s]: status %s (%s)", name, la_simd_name(levels[li]), la_status_name(s),
                 la_last_error());
        if (s == LA_OK) {
            int64_t bad = 0, bad_lse = 0;
            double worst = 0;
            for (int64_t r = 0; r < rows; r++) {
                int64_t idx[4];
                for (int64_t d = 0; d < D; d++) {
                    index_of(c, r, d, idx);
                    double got = tu_get(&ob.t, idx), w = want[r * D + d];
                    if (!tu_close(got, w, OUT_ATOL, out_rtol(out_dt))) bad++;
                    if (isfinite(got) && isfinite(w) && fabs(got - w) > worst) worst = fabs(got - w);
                }
                index_of(c, r, 0, idx);
                if (c->with_lse && !tu_close(tu_get(&lb.t, idx), want_lse[r], LSE_ATOL, LSE_RTOL)) bad_lse++;
            }
            tu_check(bad == 0, "%s [%s]: %lld of %lld out elements off (worst finite %.3g)", name,
                     la_simd_name(levels[li]), (long long)bad, (long long)(rows * D), worst);
            tu_check(bad_lse == 0, "%s [%s]: %lld lse off", name, la_simd_name(levels[li]), (long long)bad_lse);
            tu_check(changed_outside(&ob, before_o) == 0 && changed_outside(&lb, before_l) == 0,
                     "%s [%s]: wrote outside the out/lse views", name, la_simd_name(levels[li]));
            if (!c->with_lse && !c->in_place) {
                bool untouched = memcmp(lb.t.data, before_l, lb.elems * sizeof(float)) == 0;
                tu_check(untouched, "%s [%s]: wrote lse though it was NULL", name, la_simd_name(levels[li]));
            }
        }
        free(before_o), free(before_l);
    }
    la_context_destroy(ctx);
    if (!c->in_place) free(ob.t.data), free(lb.t.data);
    for (int i = 0; i < n; i++) free(po[i].t.data), free(pl[i].t.data);
    free(part0), free(lse0), free(ref_outs), free(ref_lses), free(want), free(want_lse);
}

static void random_cases(uint64_t *rng) {
    static const int64_t dims[] = {8, 64, 128, 136, 512, 1, 3, 17};
    static const int64_t lens[] = {1, 7, 13, 2};
    static const int64_t heads[] = {1, 3, 2, 4};
    char name[200];
    for (int n = 2; n <= MAX_PARTS; n++)
        for (int v = 0; v < 4; v++) {
            mg_case c = {.n = n, .B = v % 2 ? 0 : 2, .L = lens[v], .H = heads[(n + v) % 4],
                         .D = dims[(n * 4 + v) % 8], .out_dt = (la_dtype)((n + v) % 3), .strided = v & 1,
                         .with_lse = v != 2, .neg = (n + v) % (NEG_MODES - 1), .spread = v == 3 ? 40 : 6,
                         .threads = 2};
            for (int i = 0; i < n; i++) c.part_dt[i] = (la_dtype)tu_randint(rng, 0, 2);
            snprintf(name, sizeof name, "%d parts %s [%lld, %lld, %lld] out %s%s%s, %s", n,
                     c.B ? "dense B=2" : "packed", (long long)c.L, (long long)c.H, (long long)c.D,
                     la_dtype_name(c.out_dt), c.strided ? " strided" : "", c.with_lse ? "" : " no lse",
                     neg_names[c.neg]);
            run_case(rng, &c, name);
        }
}

static void special_cases(uint64_t *rng) {
    const mg_case base = {.n = 3, .B = 2, .L = 5, .H = 3, .D = 64, .part_dt = {LA_F32, LA_BF16, LA_F16},
                          .out_dt = LA_F32, .with_lse = true, .spread = 6, .threads = 2};
    mg_case c = base;
    c.in_place = true;
    run_case(rng, &c, "in place into part 0 (f32), dense");
    c = base, c.in_place = true, c.B = 0, c.L = 9, c.strided = true, c.part_dt[0] = LA_BF16, c.neg = NEG_ROWS;
    run_case(rng, &c, "in place into part 0 (bf16), packed strided, -inf rows");
    c = base, c.in_place = true, c.with_lse = false, c.part_dt[0] = LA_F16, c.D = 136;
    run_case(rng, &c, "in place into part 0 (f16), no lse");
    c = base, c.n = 1;
    run_case(rng, &c, "one part (a dtype conversion)");
    c = base, c.n = 1, c.neg = NEG_ROWS, c.out_dt = LA_BF16;
    run_case(rng, &c, "one part with -inf rows");
    c = base, c.neg = NEG_NAN_INF;
    run_case(rng, &c, "NaN and +inf lses make their rows NaN");
    c = base, c.neg = NEG_ALL, c.out_dt = LA_F16;
    run_case(rng, &c, "every part -inf everywhere");
    c = base, c.n = 4, c.L = 257, c.H = 4, c.D = 128, c.threads = 3, c.part_dt[3] = LA_BF16, c.neg = NEG_ROWS;
    run_case(rng, &c, "many rows over 3 threads");
    c = base, c.n = 5, c.B = 0, c.L = 301, c.H = 2, c.D = 200, c.threads = 2, c.strided = true, c.out_dt = LA_BF16,
    c.part_dt[3] = LA_F16, c.part_dt[4] = LA_F32;
    run_case(rng, &c, "many packed rows over 2 threads, strided, bf16 out");
    c = base, c.B = 0, c.L = 0;
    run_case(rng, &c, "packed, no tokens");
    c = base, c.L = 0;
    run_case(rng, &c, "dense, no tokens");
    c = base, c.spread = 80;
    run_case(rng, &c, "lses 160 apart (weights underflow, never overflow)");
}

/* Parts interleaved in one buffer [B, L, P, H, D] (lses [B, L, P, H]),
 * merged in place into part 0: its view's span overlaps every other part's,
 * but no byte is shared, so the call is valid. */
static void interleaved_in_place(uint64_t *rng) {
    enum { B = 2, L = 5, P = 3, H = 2, D = 24 };
    const int64_t nel = B * L * P * H * D, nl = B * L * P * H;
    float *buf = tu_alloc(sizeof(float) * nel), *lbuf = tu_alloc(sizeof(float) * nl);
    float *buf0 = tu_alloc(sizeof(float) * nel), *lbuf0 = tu_alloc(sizeof(float) * nl);
    tu_fill(rng, buf0, LA_F32, nel, -1, 1);
    tu_fill(rng, lbuf0, LA_F32, nl, -6, 6);
    la_tensor outs[P], lses[P];
    for (int i = 0; i < P; i++) {
        outs[i] = (la_tensor){.data = buf + i * H * D, .dtype = LA_F32, .ndim = 4, .shape = {B, L, H, D},
                              .stride = {L * P * H * D, P * H * D, D, 1}};
        lses[i] = (la_tensor){.data = lbuf + i * H, .dtype = LA_F32, .ndim = 3, .shape = {B, L, H},
                              .stride = {L * P * H, P * H, 1}};
    }
    double *ro = tu_alloc(sizeof(double) * P * B * L * H * D), *rl = tu_alloc(sizeof(double) * P * B * L * H);
    double *want = tu_alloc(sizeof(double) * B * L * H * D), *want_lse = tu_alloc(sizeof(double) * B * L * H);
    const int64_t rows = B * L * H;
    for (int i = 0; i < P; i++)
        for (int64_t r = 0; r < rows; r++) {
            const int64_t b = r / (L * H), t = r / H % L, h = r % H;
            rl[i * rows + r] = lbuf0[(b * L + t) * P * H + i * H + h];
            for (int64_t d = 0; d < D; d++)
                ro[(i * rows + r) * D + d] = buf0[((b * L + t) * P * H + i * H + h) * D + d];
        }
    ref_attention_merge(P, rows, D, ro, rl, want, want_lse);
    la_context *ctx;
    la_context_create(&ctx, 2);
    for (int li = 0; li < n_levels; li++) {
        la_context_set_simd(ctx, levels[li]);
        memcpy(buf, buf0, sizeof(float) * nel);
        memcpy(lbuf, lbuf0, sizeof(float) * nl);
        la_tensor out = outs[0], lse = lses[0];
        la_status s = la_attention_merge(ctx, P, outs, lses, &out, &lse);
        tu_check(s == LA_OK, "interleaved in place [%s]: status %s (%s)", la_simd_name(levels[li]), la_status_name(s),
                 la_last_error());
        if (s != LA_OK) continue;
        int64_t bad = 0, others_changed = 0;
        for (int64_t r = 0; r < rows; r++) {
            int64_t idx[4] = {r / (L * H), r / H % L, r % H, 0};
            for (int64_t d = 0; d < D; d++) {
                idx[3] = d;
                bad += !tu_close(tu_get(&out, idx), want[r * D + d], OUT_ATOL, out_rtol(LA_F32));
            }
            bad += !tu_close(tu_get(&lse, idx), want_lse[r], LSE_ATOL, LSE_RTOL);
        }
        for (int64_t e = 0; e < nel; e++) /* parts 1.. untouched */
            if (e / (H * D) % P != 0 && buf[e] != buf0[e]) others_changed++;
        tu_check(bad == 0, "interleaved in place [%s]: %lld values off", la_simd_name(levels[li]), (long long)bad);
        tu_check(others_changed == 0, "interleaved in place [%s]: parts 1.. changed", la_simd_name(levels[li]));
    }
    la_context_destroy(ctx);
    free(buf), free(lbuf), free(buf0), free(lbuf0), free(ro), free(rl), free(want), free(want_lse);
}

/* Forward over all keys == merge of the forwards over disjoint key ranges
 * (non-causal without ALiBi: a key's score does not depend on where the
 * range starts). Some ranges may be empty (rows with lse -inf). Both sides
 * are f32 kernel results over inputs exact in their dtype, each within
 * ~1e-6 of exact on outputs of size ~0.1; 2e-5 + 2e-4 relative (as the
 * decode test) leaves a wide margin. */
static void forward_splits(uint64_t *rng, la_dtype dt, int64_t Lk, const int64_t *cuts, int nsplit, float softcap) {
    enum { B = 2, LQ = 5, H = 4, HKV = 2, D = 64 };
    const int64_t qn = B * LQ * H * D, kn = B * Lk * HKV * D, ln = B * LQ * H;
    const size_t es = la_dtype_size(dt);
    void *q = tu_alloc(qn * es), *k = tu_alloc(kn * es), *v = tu_alloc(kn * es);
    tu_fill(rng, q, dt, qn, -1, 1);
    tu_fill(rng, k, dt, kn, -1, 1);
    tu_fill(rng, v, dt, kn, -1, 1);
    la_tensor tq = la_tensor_contiguous(q, dt, 4, (int64_t[]){B, LQ, H, D});
    la_tensor tk = la_tensor_contiguous(k, dt, 4, (int64_t[]){B, Lk, HKV, D});
    la_tensor tv = la_tensor_contiguous(v, dt, 4, (int64_t[]){B, Lk, HKV, D});
    float *full = tu_alloc(sizeof(float) * qn), *full_lse = tu_alloc(sizeof(float) * ln);
    float *merged = tu_alloc(sizeof(float) * qn), *merged_lse = tu_alloc(sizeof(float) * ln);
    float *parts = tu_alloc(sizeof(float) * qn * nsplit), *part_lse = tu_alloc(sizeof(float) * ln * nsplit);
    la_tensor tfull = la_tensor_contiguous(full, LA_F32, 4, tq.shape);
    la_tensor tfl = la_tensor_contiguous(full_lse, LA_F32, 3, tq.shape);
    la_tensor tm = la_tensor_contiguous(merged, LA_F32, 4, tq.shape);
    la_tensor tml = la_tensor_contiguous(merged_lse, LA_F32, 3, tq.shape);
    la_tensor outs[MAX_PARTS], lses[MAX_PARTS];
    la_attention_params p = la_attention_params_default();
    p.softcap = softcap;
    la_context *ctx;
    la_context_create(&ctx, 2);
    char name[120];
    snprintf(name, sizeof name, "forward over %lld keys (%s%s) in %d ranges", (long long)Lk, la_dtype_name(dt),
             softcap > 0 ? ", softcap" : "", nsplit);
    for (int li = 0; li < n_levels; li++) {
        la_context_set_simd(ctx, levels[li]);
        la_status s = la_attention_forward(ctx, &p, &tq, &tk, &tv, &tfull, &tfl);
        for (int i = 0; i < nsplit && s == LA_OK; i++) {
            la_tensor ki = tk, vi = tv;
            ki.shape[1] = vi.shape[1] = cuts[i + 1] - cuts[i];
            ki.data = (char *)k + cuts[i] * tk.stride[1] * (int64_t)es;
            vi.data = (char *)v + cuts[i] * tv.stride[1] * (int64_t)es;
            outs[i] = la_tensor_contiguous(parts + i * qn, LA_F32, 4, tq.shape);
            lses[i] = la_tensor_contiguous(part_lse + i * ln, LA_F32, 3, tq.shape);
            s = la_attention_forward(ctx, &p, &tq, &ki, &vi, &outs[i], &lses[i]);
        }
        tu_poison(merged, LA_F32, qn);
        tu_poison(merged_lse, LA_F32, ln);
        if (s == LA_OK) s = la_attention_merge(ctx, nsplit, outs, lses, &tm, &tml);
        tu_check(s == LA_OK, "%s [%s]: status %s (%s)", name, la_simd_name(levels[li]), la_status_name(s),
                 la_last_error());
        if (s != LA_OK) continue;
        int64_t bad = 0;
        for (int64_t e = 0; e < qn; e++) bad += !tu_close(merged[e], full[e], 2e-5, 2e-4);
        for (int64_t e = 0; e < ln; e++) bad += !tu_close(merged_lse[e], full_lse[e], 5e-5, 1e-6);
        tu_check(bad == 0, "%s [%s]: %lld values differ from the forward over all keys", name,
                 la_simd_name(levels[li]), (long long)bad);
    }
    la_context_destroy(ctx);
    free(q), free(k), free(v), free(full), free(full_lse), free(merged), free(merged_lse), free(parts), free(part_lse);
}

static void bad_inputs(uint64_t *rng) {
    enum { B = 2, L = 3, H = 2, D = 16, N = B * L * H * D, NL = B * L * H };
    static float o0[N], o1[N], out[N + D], l0[NL], l1[NL], lse[NL + 1], big[2 * N];
    static uint16_t lse_half[NL];
    tu_fill(rng, o0, LA_F32, N, -1, 1);
    tu_fill(rng, o1, LA_F32, N, -1, 1);
    tu_fill(rng, l0, LA_F32, NL, -3, 3);
    tu_fill(rng, l1, LA_F32, NL, -3, 3);
    const int64_t shape[4] = {B, L, H, D};
    la_context *ctx;
    la_context_create(&ctx, 2);
#define MBAD(label, want, ...) MBAD_EITHER(label, want, want, __VA_ARGS__)
/* `alt` is a second status the call may fairly return. */
#define MBAD_EITHER(label, want, alt, ...)                                                                       \
    do {                                                                                                         \
        la_tensor xo[2] = {la_tensor_contiguous(o0, LA_F32, 4, shape), la_tensor_contiguous(o1, LA_F32, 4, shape)}; \
        la_tensor xl[2] = {la_tensor_contiguous(l0, LA_F32, 3, shape), la_tensor_contiguous(l1, LA_F32, 3, shape)}; \
        la_tensor xout = la_tensor_contiguous(out, LA_F32, 4, shape);                                            \
        la_tensor xlse = la_tensor_contiguous(lse, LA_F32, 3, shape);                                            \
        la_context *xctx = ctx;                                                                                  \
        int xn = 2;                                                                                              \
        la_tensor *pparts = xo, *plses = xl, *pout = &xout, *plse = &xlse;                                       \
        __VA_ARGS__;                                                                                             \
        tu_poison(out, LA_F32, N + D);                                                                           \
        tu_poison(lse, LA_F32, NL + 1);                                                                          \
        la_status s = la_attention_merge(xctx, xn, pparts, plses, pout, plse);                                   \
        tu_check(s == (want) || s == (alt), "merge bad input '%s': got %s (%s), want %s", label, la_status_name(s), \
                 la_last_error(), la_status_name(want));                                                         \
        bool untouched = true;                                                                                   \
        for (int i = 0; i < N + D; i++) untouched &= isnan(out[i]);                                              \
        for (int i = 0; i < NL + 1; i++) untouched &= isnan(lse[i]);                                             \
        tu_check(s == LA_OK || untouched, "merge bad input '%s' wrote to out or lse", label);                    \
        tu_check(s == LA_OK || strlen(la_last_error()) > 0, "merge bad input '%s' left no message", label);      \
    } while (0)
    MBAD("valid call", LA_OK, (void)0);
    MBAD("valid call, lse NULL", LA_OK, plse = NULL);
    /* NULL pointers */
    MBAD("ctx NULL", LA_ERR_NULL, xctx = NULL);
    MBAD("out_parts NULL", LA_ERR_NULL, pparts = NULL);
    MBAD("lse_parts NULL", LA_ERR_NULL, plses = NULL);
    MBAD("out NULL", LA_ERR_NULL, pout = NULL);
    MBAD("a part's data NULL", LA_ERR_NULL, xo[1].data = NULL);
    MBAD("a part's lse data NULL", LA_ERR_NULL, xl[0].data = NULL);
    MBAD("out data NULL", LA_ERR_NULL, xout.data = NULL);
    /* counts */
    MBAD("n_parts 0", LA_ERR_ARGUMENT, xn = 0);
    MBAD("n_parts -1", LA_ERR_ARGUMENT, xn = -1);
    /* shapes */
    MBAD("part head_dim differs", LA_ERR_SHAPE, xo[1].shape[3] = D / 2);
    MBAD("part tokens differ", LA_ERR_SHAPE, xo[0].shape[1] = L - 1);
    MBAD("part is [T, H, D]", LA_ERR_SHAPE, xo[1] = la_tensor_contiguous(o1, LA_F32, 3, (int64_t[]){B * L, H, D}));
    MBAD("lse part heads differ", LA_ERR_SHAPE, xl[1].shape[2] = 1);
    MBAD("lse part has 4 dims", LA_ERR_SHAPE, xl[1] = la_tensor_contiguous(l1, LA_F32, 4, (int64_t[]){B, L, H, 1}));
    MBAD("out lse shape", LA_ERR_SHAPE, xlse.shape[0] = 1);
    MBAD("out has 2 dims", LA_ERR_SHAPE, xout = la_tensor_contiguous(out, LA_F32, 2, (int64_t[]){NL, D}));
    MBAD("out head_dim 0", LA_ERR_SHAPE, xout.shape[3] = 0; xo[0].shape[3] = 0; xo[1].shape[3] = 0);
    MBAD("batch 0", LA_ERR_SHAPE, xout.shape[0] = 0; xo[0].shape[0] = 0; xo[1].shape[0] = 0);
    /* dtypes */
    MBAD("lse part not f32", LA_ERR_DTYPE, xl[1].data = lse_half; xl[1].dtype = LA_BF16);
    MBAD("out lse f16", LA_ERR_DTYPE, xlse.dtype = LA_F16);
    MBAD("unknown part dtype", LA_ERR_DTYPE, xo[0].dtype = (la_dtype)7);
    MBAD("unknown out dtype", LA_ERR_DTYPE, xout.dtype = LA_DTYPE_COUNT);
    /* strides */
    MBAD("part last dim stride 2", LA_ERR_STRIDE, xo[1].stride[3] = 2; xo[1].shape[3] = D / 2; xo[0].shape[3] = D / 2;
         xout.shape[3] = D / 2);
    MBAD("out heads overlap", LA_ERR_STRIDE, xout.stride[2] = D / 2);
    MBAD("out lse token stride 0", LA_ERR_STRIDE, xlse.stride[1] = 0);
    MBAD("negative stride", LA_ERR_STRIDE, xo[0].stride[0] = -1);
    /* devices */
    MBAD("a part on CUDA", LA_ERR_DEVICE, xo[1].device.kind = LA_DEVICE_CUDA);
    MBAD("a lse part on another GPU index", LA_ERR_DEVICE, xl[0].device.index = 1);
    MBAD("out lse on CUDA", LA_ERR_DEVICE, xlse.device.kind = LA_DEVICE_CUDA);
    /* no CUDA backend in this build: LA_ERR_DEVICE; one without a merge kernel: LA_ERR_UNSUPPORTED */
    MBAD_EITHER("all on CUDA", LA_ERR_DEVICE, LA_ERR_UNSUPPORTED,
         xout.device.kind = xlse.device.kind = xo[0].device.kind = xo[1].device.kind = xl[0].device.kind =
             xl[1].device.kind = LA_DEVICE_CUDA);
    MBAD("unknown device kind", LA_ERR_DEVICE, xo[0].device.kind = (la_device_kind)5);
    /* aliasing: exact views of one part merge in place; anything else is refused */
    MBAD("out is exactly part 1, lse exactly lse part 0", LA_OK, xout = xo[1]; xlse = xl[0]);
    MBAD("out overlaps part 0 one row off", LA_ERR_ARGUMENT, xout.data = o0 + D);
    MBAD("out is part 0's memory viewed as bf16", LA_ERR_ARGUMENT, xout = xo[0]; xout.dtype = LA_BF16);
    MBAD("out is part 0 with other strides", LA_ERR_ARGUMENT, xout = xo[0]; xout.stride[1] = D; xout.stride[2] = L * D);
    MBAD("out overlaps a lse part", LA_ERR_ARGUMENT, xl[1].data = out + 5);
    MBAD("lse overlaps a part", LA_ERR_ARGUMENT, xo[1].data = big; xlse.data = big + 7);
    MBAD("lse overlaps lse part 1 one head off", LA_ERR_ARGUMENT, xlse.data = l1 + 1);
    MBAD("out and lse overlap", LA_ERR_ARGUMENT, xlse.data = out + 3);
    /* disjoint views into one buffer are fine */
    MBAD("parts side by side in one buffer, out elsewhere", LA_OK, xo[0].data = big; xo[1].data = big + N);
    la_context_destroy(ctx);
#undef MBAD
}

/* la_tensors_overlap, which decides the merge's aliasing rule, against marking
 * the bytes of random views (last dim stride 1, as la_check_tensor
 * requires) of one small buffer: nested, interleaved, transposed and
 * self-overlapping layouts alike. Views this small stay far inside the
 * search's step budget, so every answer must be exact. */
static void overlap_exact(uint64_t *rng) {
    enum { BUF = 2048 };
    static unsigned char buf[BUF], mark[BUF];
    int64_t wrong = 0, overlapping = 0, trials = 4000;
    for (int64_t trial = 0; trial < trials; trial++) {
        la_tensor t[2];
        for (int k = 0; k < 2; k++) {
            la_tensor *v = &t[k];
            memset(v, 0, sizeof *v);
            v->dtype = (la_dtype)tu_randint(rng, 0, 2);
            v->ndim = (int)tu_randint(rng, 2, 4);
            const int64_t es = (int64_t)la_dtype_size(v->dtype);
            int64_t last = 0;
            for (int i = 0; i < v->ndim; i++) {
                v->shape[i] = tu_randint(rng, 0, 9) == 0 ? 0 : tu_randint(rng, 1, 4);
                v->stride[i] = i == v->ndim - 1 ? 1 : tu_randint(rng, 0, 24);
                last += (v->shape[i] > 0 ? v->shape[i] - 1 : 0) * v->stride[i];
            }
            /* half the views start near the buffer's start, so pairs overlap often */
            const int64_t room = BUF - (last + 1) * es - 1;
            v->data = buf + tu_randint(rng, 0, trial % 2 && room > 64 ? 64 : room);
        }
        memset(mark, 0, sizeof mark);
        bool truth = false;
        for (int k = 0; k < 2; k++) {
            const la_tensor *v = &t[k];
            const int64_t n = la_tensor_numel(v), es = (int64_t)la_dtype_size(v->dtype);
            for (int64_t e = 0; e < n; e++) {
                int64_t rem = e, off = 0;
                for (int i = v->ndim - 1; i >= 0; i--) {
                    off += rem % v->shape[i] * v->stride[i];
                    rem /= v->shape[i];
                }
                unsigned char *p = (unsigned char *)v->data + off * es;
                for (int64_t byte = 0; byte < es; byte++) {
                    if (k == 0) mark[p + byte - buf] = 1;
                    else truth |= mark[p + byte - buf];
                }
            }
        }
        overlapping += truth;
        wrong += la_tensors_overlap(&t[0], &t[1]) != truth;
    }
    tu_check(wrong == 0, "la_tensors_overlap: %lld of %lld random pairs answered wrong", (long long)wrong,
             (long long)trials);
    tu_check(overlapping > trials / 10 && overlapping < trials * 9 / 10,
             "la_tensors_overlap test: %lld of %lld pairs overlap; the generator should mix both", (long long)overlapping,
             (long long)trials);
}

int main(void) {
    uint64_t rng = tu_seed();
    n_levels = tu_simd_levels(levels);
    random_cases(&rng);
    special_cases(&rng);
    interleaved_in_place(&rng);
    forward_splits(&rng, LA_F32, 300, (int64_t[]){0, 150, 300}, 2, 0);
    forward_splits(&rng, LA_F32, 301, (int64_t[]){0, 1, 1, 200, 301}, 4, 0);
    forward_splits(&rng, LA_BF16, 97, (int64_t[]){0, 40, 97}, 2, 5);
    forward_splits(&rng, LA_F16, 513, (int64_t[]){0, 100, 101, 300, 450, 450, 513}, 6, 0);
    bad_inputs(&rng);
    overlap_exact(&rng);
    return tu_finish();
}
