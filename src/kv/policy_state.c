/* Stateful KV-cache policies (include/longattn.h, "KV-cache policies"):
 * per-entry attention mass (la_kv_attention_mass), H2O's accumulated
 * scores, SnapKV's pooled votes, Quest's page bounds and page-subset
 * decode, DuoAttention's retrieval heads; and the attention a session runs
 * when heads hold different numbers of entries (la_kv_policy_attend).
 *
 * H2O's scores live here, one array per (layer, KV head) in slot order:
 * every eviction drops the same slots from the array as from the cache
 * (la_kv_cache_compact), so the two stay aligned. Sequence 0 only. */
#include "base/base.h"
#include "base/parallel.h"
#include "kv/kv_internal.h"
#include "ops/validate.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct {
    float key;
    int32_t slot;
} keyed;

struct la_kv_policy_state {
    la_kv_policy p;
    la_kv_cache_params cp;
    int64_t heads;          /* layers x kv heads */
    float **score;          /* h2o: [heads][cap] accumulated mass, slot order */
    float **pin;            /* h2o with snap: [heads][pin_cap] 1 for an entry the last prompt's end voted for */
    int64_t *n_score, *cap, *pin_cap; /* entries scored (and pin flags held), capacities */
    float *lse;             /* [n x n_heads] of the last attend */
    int64_t lse_cap, lse_layer, lse_n, lse_heads;
    float lse_scale;        /* the attend's resolved scale; 0 when its rule was not plain softmax (softcap) */
    float *mass, *vote;     /* scratch [len] */
    int32_t *slots;         /* scratch [len] */
    keyed *order;           /* scratch [len] */
    int64_t scratch_cap;
    float *kf, *vf;         /* prefill scratch: entries read back as f32 */
    int64_t kf_cap, vf_cap; /* floats */
    float **kmin, **kmax;   /* quest: [heads][pages * D] */
    int64_t *bounded;       /* quest: pages bounded per (layer, head) */
    int32_t *blocks;        /* quest: [pages] scratch */
    bool *retrieval;        /* duo: [heads] */
    int64_t *layer_budget;  /* snapkv: [layers] entries each head keeps (pyramid=, or share= of the duo scores) */
    /* h2o, snapkv: the prompt's tail per layer, kept across prefill chunks
     * until la_kv_policy_end_prompt selects: the last `window` queries
     * (snapkv) [win_cap rows][n_heads][D], their log-sum-exp [rows][n_heads] */
    float **qwin, **lwin;
    int64_t *nwin;          /* [layers] rows held */
    bool *lwin_ok;          /* [layers] every held row has its log-sum-exp */
    bool *pending;          /* [layers] prefill entries not selected yet */
    bool *prompt_done;      /* [layers] a prompt ended (la_kv_policy_end_prompt) and no multi-token call came
                             * since: single-token calls are decode steps (h2o's decode=grow) */
    int64_t win_cap, win_heads;
    float win_scale;
};

/* ------------------------------------------------------ attention mass */

static double dot_d(const float *a, const float *b, int64_t n) {
    double acc = 0;
#pragma omp simd reduction(+ : acc)
    for (int64_t d = 0; d < n; d++) acc += (double)a[d] * b[d];
    return acc;
}

/* exp(x) in f32 for x <= ~0 (scores minus their row's log-sum-exp):
 * 2^(x log2 e) = 2^r 2^f, r = round(x log2 e), |f| <= 1/2, 2^f by its
 * Taylor polynomial to degree 6 (relative error < 2e-7); x below -87
 * clamps there (exp(-87) = 1.6e-38, a mass no selection tells from 0).
 * Plain arithmetic, so `omp simd` loops vectorise it. */
static inline float exp_le0(float x) {
    x = x > -87.0f ? (x < 80.0f ? x : 80.0f) : -87.0f; /* NaN too: its conversion to int below is undefined */
    const float t = x * 1.44269504088896341f;
    const float r = (t + 12582912.0f) - 12582912.0f; /* round to nearest (|t| < 2^22) */
    const float f = t - r;
    float p = 1.540353039338161e-4f;
    p = p * f + 1.333355814642844e-3f;
    p = p * f + 9.618129107628477e-3f;
    p = p * f + 5.550410866482158e-2f;
    p = p * f + 2.402265069591007e-1f;
    p = p * f + 6.931471805599453e-1f;
    p = p * f + 1.0f;
    const int32_t bits = ((int32_t)r + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

la_status la_kv_attention_mass(la_context *ctx, const la_kv_cache *c, int64_t layer, int64_t head, int64_t seq,
                               const float *q, int64_t n, int64_t group, int64_t q_stride, float scale,
                               const float *lse, int64_t lse_stride, float *mass) {
    static const char *fn = "la_kv_attention_mass";
    if (!c || !q || !mass)
        return la_fail(LA_ERR_NULL, "%s: %s is NULL", fn, !c ? "cache" : !q ? "q" : "mass");
    const int64_t len = la_kv_cache_len(c, layer, head, seq);
    if (len < 0)
        return la_fail(LA_ERR_ARGUMENT, "%s: layer %lld, head %lld or seq %lld is out of range", fn, (long long)layer,
                       (long long)head, (long long)seq);
    const int64_t D = la_kv_cache_params_of(c)->head_dim;
    /* every index below, (n - 1) x q_stride + group x head_dim and the
     * lse's, must fit in int64 (and the bytes in memory): the checks on
     * group < 2^31 and the strides < 2^60 / n leave room for both */
    if (n < 1 || n > len || group < 1 || group > INT32_MAX || q_stride < group * D ||
        q_stride > ((int64_t)1 << 60) / n || (lse && (lse_stride < group || lse_stride > ((int64_t)1 << 60) / n)))
        return la_fail(LA_ERR_ARGUMENT,
                       "%s: n %lld must be in [1, %lld entries], group %lld in [1, 2^31), q_stride %lld >= group x "
                       "head_dim, lse_stride %lld >= group, both strides below 2^60 / n",
                       fn, (long long)n, (long long)len, (long long)group, (long long)q_stride, (long long)lse_stride);
    if (!isfinite(scale))
        return la_fail(LA_ERR_ARGUMENT, "%s: scale %g is not finite", fn, (double)scale);
    la_status al;
    if ((al = la_check_aligned(q, sizeof(float), "q")) || (al = la_check_aligned(lse, sizeof(float), "lse")) ||
        (al = la_check_aligned(mass, sizeof(float), "mass")))
        return al;
    const double sc = scale != 0 ? scale : 1.0 / sqrt((double)D);
    float *k = malloc(sizeof(float) * (size_t)(len * D));
    double *l = malloc(sizeof(double) * (size_t)(n * group));
    if (!k || !l) {
        free(k), free(l);
        return la_fail(LA_ERR_NOMEM, "%s: no memory for %lld keys", fn, (long long)len);
    }
    la_status st = la_kv_cache_read(c, layer, head, seq, 0, len, k, NULL);
    if (st) {
        free(k), free(l);
        return st;
    }
    const int threads = ctx ? la_context_threads(ctx) : 1;
#define DOT(i, g, j) (dot_d(q + (i) * q_stride + (g) * D, k + (j) * D, D) * sc)
    if (lse) {
        for (int64_t i = 0; i < n; i++)
            for (int64_t g = 0; g < group; g++) l[i * group + g] = lse[i * lse_stride + g];
    } else {
#pragma omp parallel for num_threads(threads) schedule(static)
        for (int64_t r = 0; r < n * group; r++) {
            const int64_t i = r / group, g = r % group, vis = len - n + i + 1;
            double m = -INFINITY, s = 0;
            for (int64_t j = 0; j < vis; j++) m = fmax(m, DOT(i, g, j));
            for (int64_t j = 0; j < vis; j++) s += exp(DOT(i, g, j) - m);
            l[r] = m + log(s);
        }
    }
    /* the masses: blocks of MB keys per thread; per visible query row the
     * block's scores (double dots), then exp in f32 over the block
     * (exp_le0, vectorised), summed in double */
    enum { MB = 64 };
#pragma omp parallel for num_threads(threads) schedule(dynamic)
    for (int64_t jb = 0; jb < len; jb += MB) {
        const int64_t nb = len - jb < MB ? len - jb : MB;
        double acc[MB], x[MB];
        for (int64_t t = 0; t < nb; t++) acc[t] = 0;
        /* query i sees j when j <= len - n + i */
        const int64_t i0 = jb - (len - n) > 0 ? jb - (len - n) : 0;
        for (int64_t i = i0; i < n; i++) {
            const int64_t lim = len - n + i - jb; /* block entries [0, lim] are visible */
            for (int64_t g = 0; g < group; g++) {
                const double lr = l[i * group + g];
                for (int64_t t = 0; t < nb; t++) x[t] = DOT(i, g, jb + t) - lr;
#pragma omp simd
                for (int64_t t = 0; t < nb; t++) {
                    const float e = exp_le0((float)x[t]);
                    acc[t] += t <= lim ? (double)e : 0.0;
                }
            }
        }
        for (int64_t t = 0; t < nb; t++) mass[jb + t] = (float)acc[t];
    }
#undef DOT
    free(k), free(l);
    return la_succeed();
}

/* --------------------------------------------------------------- state */

static void state_free_arrays(la_kv_policy_state *s) {
    for (int64_t i = 0; i < s->heads; i++) {
        if (s->score) free(s->score[i]);
        if (s->pin) free(s->pin[i]);
        if (s->kmin) free(s->kmin[i]);
        if (s->kmax) free(s->kmax[i]);
    }
    for (int64_t l = 0; l < s->cp.n_layers; l++) {
        if (s->qwin) free(s->qwin[l]);
        if (s->lwin) free(s->lwin[l]);
    }
}

void la_kv_policy_state_destroy(la_kv_policy_state *s) {
    if (!s) return;
    state_free_arrays(s);
    free(s->score), free(s->n_score), free(s->cap), free(s->lse), free(s->mass), free(s->vote);
    free(s->slots), free(s->order), free(s->kf), free(s->vf), free(s->kmin), free(s->kmax), free(s->bounded);
    free(s->blocks), free(s->retrieval), free(s->qwin), free(s->lwin), free(s->nwin), free(s->lwin_ok);
    free(s->pending), free(s->prompt_done), free(s->pin), free(s->pin_cap), free(s->layer_budget);
    free(s);
}

void la_kv_policy_state_reset(la_kv_policy_state *s) {
    if (!s) return;
    for (int64_t i = 0; i < s->heads; i++) s->n_score[i] = 0, s->bounded[i] = 0;
    for (int64_t l = 0; l < s->cp.n_layers; l++) s->nwin[l] = 0, s->pending[l] = false, s->prompt_done[l] = false;
    s->lse_n = 0;
}

/* The per-(layer, KV head) scores of the duo score file p.file into sc
 * [layers x kv heads], checked against the cache's dimensions. */
static la_status read_duo_scores(const la_kv_policy_state *s, float *sc) {
    const char *path = s->p.file;
    FILE *f = fopen(path, "r");
    if (!f)
        return la_fail(LA_ERR_IO,
                       "KV policy duo: cannot open the score file '%s' (make one with `longattn calibrate-duo -m "
                       "MODEL -o %s`, or la_duo_calibrate)",
                       path, path);
    char line[4096];
    long long ver = -1, L = -1, H = -1;
    int64_t got = 0;
    const int64_t want = s->heads;
    la_status st = LA_OK;
    while (!st && fgets(line, sizeof line, f)) {
        /* a line cut by the buffer would split a number in two; an endless
         * file with no newline (a device) would never end the loop */
        if (!strchr(line, '\n') && !feof(f)) {
            st = la_fail(LA_ERR_FORMAT, "KV policy duo: '%s': a line longer than %zu bytes", path, sizeof line - 2);
            break;
        }
        char *p = line;
        while (*p == ' ' || *p == '\t') p++;
        if (*p == '#' || *p == '\n' || !*p) continue;
        if (ver < 0) {
            if (sscanf(p, "longattn-duo-scores %lld %lld %lld", &ver, &L, &H) != 3 || ver != 1)
                st = la_fail(LA_ERR_FORMAT, "KV policy duo: '%s' does not start with 'longattn-duo-scores 1 LAYERS "
                             "KV_HEADS'",
                             path);
            else if (L != s->cp.n_layers || H != s->cp.n_kv_heads)
                st = la_fail(LA_ERR_FORMAT,
                             "KV policy duo: '%s' scores %lld layers x %lld KV heads; this cache has %lld x %lld",
                             path, L, H, (long long)s->cp.n_layers, (long long)s->cp.n_kv_heads);
            continue;
        }
        for (;;) {
            while (*p == ' ' || *p == '\t') p++;
            if (*p == '\n' || !*p) break;
            char *end;
            double v = strtod(p, &end);
            if (end == p || !isfinite(v) || got >= want) {
                st = la_fail(LA_ERR_FORMAT, "KV policy duo: '%s': %s after %lld scores", path,
                             got >= want ? "more scores than layers x heads" : "a field that is not a finite number",
                             (long long)got);
                break;
            }
            sc[got++] = (float)v;
            p = end;
        }
    }
    /* a directory opens but does not read (EISDIR): say so, not "holds 0 scores" */
    const bool read_failed = ferror(f);
    const int why = errno;
    fclose(f);
    if (!st && read_failed)
        st = la_fail(LA_ERR_IO, "KV policy duo: cannot read the score file '%s': %s", path,
                     why ? strerror(why) : "read error");
    if (!st && (ver < 0 || got != want))
        st = la_fail(LA_ERR_FORMAT, "KV policy duo: '%s' holds %lld scores; expected %lld (layers x KV heads)", path,
                     (long long)got, (long long)want);
    return st;
}

static la_status load_duo(la_kv_policy_state *s) {
    const int64_t want = s->heads;
    float *sc = malloc(sizeof(float) * (size_t)want);
    la_status st = sc ? read_duo_scores(s, sc)
                      : la_fail(LA_ERR_NOMEM, "KV policy duo: no memory for %lld scores", (long long)want);
    if (!st) {
        /* the share with the highest scores are retrieval heads (ties: the earlier pair) */
        const int64_t keep = (int64_t)floor(s->p.share * (double)want + 0.5);
        for (int64_t k = 0; k < keep; k++) {
            int64_t best = -1;
            for (int64_t i = 0; i < want; i++)
                if (!s->retrieval[i] && (best < 0 || sc[i] > sc[best])) best = i;
            s->retrieval[best] = true;
        }
    }
    free(sc);
    return st;
}

/* snapkv's per-layer budgets. pyramid=F: layer l of L gets B (1 + F (L - 1
 * - 2l) / (L - 1)); share=S with a duo score file: L B ((1 - S) / L + S
 * w_l / sum w), w_l the sum of its KV heads' scores (negative ones count
 * 0; all zero: uniform). Either sums to L x B. They are rounded to whole
 * pages with that sum kept (largest remainders, ties the earlier layer),
 * so the ragged layers hold no more pages than an even split; where a
 * rounded budget would not exceed max(window, recent) (budgets near a
 * page), each is floored instead. */
static la_status snap_layer_budgets(la_kv_policy_state *s) {
    const la_kv_policy *p = &s->p;
    const int64_t L = s->cp.n_layers, Hkv = s->cp.n_kv_heads, ps = s->cp.page_size;
    const int64_t last = p->recent > p->window ? p->recent : p->window;
    if (!(s->layer_budget = malloc(sizeof(int64_t) * (size_t)L)))
        return la_fail(LA_ERR_NOMEM, "la_kv_policy_state_create: no memory");
    for (int64_t l = 0; l < L; l++) s->layer_budget[l] = p->budget;
    if (!(p->share > 0) && (p->pyramid == 0 || L < 2)) return LA_OK; /* every layer BUDGET, as plain SnapKV */
    double *raw = malloc(sizeof(double) * (size_t)L);
    float *sc = p->share > 0 ? malloc(sizeof(float) * (size_t)s->heads) : NULL;
    la_status st = raw && (sc || !(p->share > 0))
                       ? LA_OK
                       : la_fail(LA_ERR_NOMEM, "la_kv_policy_state_create: no memory");
    if (!st && sc) st = read_duo_scores(s, sc);
    double total = 0;
    for (int64_t i = 0; !st && sc && i < s->heads; i++) total += sc[i] > 0 ? sc[i] : 0;
    for (int64_t l = 0; !st && l < L; l++) {
        raw[l] = (double)p->budget;
        if (sc) {
            double w = 0;
            for (int64_t h = 0; h < Hkv; h++) w += sc[l * Hkv + h] > 0 ? sc[l * Hkv + h] : 0;
            const double part = total > 0 ? w / total : 1.0 / (double)L;
            raw[l] = (double)(L * p->budget) * ((1 - p->share) / (double)L + p->share * part);
        } else {
            raw[l] *= 1 + p->pyramid * (double)(L - 1 - 2 * l) / (double)(L - 1);
        }
    }
    if (!st) {
        /* whole pages, largest remainders; + 1e-9: a whole number in exact arithmetic stays one */
        int64_t left = L * p->budget / ps;
        bool paged = true;
        for (int64_t l = 0; l < L; l++) {
            s->layer_budget[l] = (int64_t)floor(raw[l] / (double)ps + 1e-9);
            left -= s->layer_budget[l];
        }
        for (; left > 0; left--) {
            int64_t best = -1;
            double best_frac = -1;
            for (int64_t l = 0; l < L; l++) {
                const double frac = raw[l] / (double)ps - (double)s->layer_budget[l];
                if (frac > best_frac) best = l, best_frac = frac;
            }
            if (best < 0) break;
            s->layer_budget[best]++;
        }
        for (int64_t l = 0; l < L; l++) paged &= (s->layer_budget[l] *= ps) > last;
        for (int64_t l = 0; !paged && l < L; l++) s->layer_budget[l] = (int64_t)floor(raw[l] + 1e-9);
    }
    free(raw), free(sc);
    return st;
}

la_status la_kv_policy_state_create(const la_kv_policy *p, const la_kv_cache *c, la_kv_policy_state **out) {
    if (out) *out = NULL;
    if (!p || !c || !out)
        return la_fail(LA_ERR_NULL, "la_kv_policy_state_create: %s is NULL", !p ? "policy" : !c ? "cache" : "out");
    la_status st = la_kv_policy_validate(p);
    if (st) return st;
    if (!la_kv_policy_has_state(p))
        return la_fail(LA_ERR_ARGUMENT, "la_kv_policy_state_create: policy kind %d keeps no state", (int)p->kind);
    const la_kv_cache_params *cp = la_kv_cache_params_of(c);
    if (cp->max_seqs != 1)
        return la_fail(LA_ERR_UNSUPPORTED, "la_kv_policy_state_create: the cache holds %lld sequences; stateful "
                       "policies support one",
                       (long long)cp->max_seqs);
    la_kv_policy_state *s = calloc(1, sizeof *s);
    if (!s) return la_fail(LA_ERR_NOMEM, "la_kv_policy_state_create: no memory");
    s->p = *p, s->cp = *cp, s->heads = cp->n_layers * cp->n_kv_heads;
    const size_t H = (size_t)s->heads;
    s->score = calloc(H, sizeof *s->score);
    s->pin = calloc(H, sizeof *s->pin);
    s->pin_cap = calloc(H, sizeof *s->pin_cap);
    s->kmin = calloc(H, sizeof *s->kmin);
    s->kmax = calloc(H, sizeof *s->kmax);
    s->n_score = calloc(H, sizeof *s->n_score);
    s->cap = calloc(H, sizeof *s->cap);
    s->bounded = calloc(H, sizeof *s->bounded);
    s->retrieval = calloc(H, sizeof *s->retrieval);
    const size_t NL = (size_t)cp->n_layers;
    s->qwin = calloc(NL, sizeof *s->qwin);
    s->lwin = calloc(NL, sizeof *s->lwin);
    s->nwin = calloc(NL, sizeof *s->nwin);
    s->lwin_ok = calloc(NL, sizeof *s->lwin_ok);
    s->pending = calloc(NL, sizeof *s->pending);
    s->prompt_done = calloc(NL, sizeof *s->prompt_done);
    if (!s->score || !s->pin || !s->pin_cap || !s->kmin || !s->kmax || !s->n_score || !s->cap || !s->bounded ||
        !s->retrieval || !s->qwin || !s->lwin || !s->nwin || !s->lwin_ok || !s->pending || !s->prompt_done) {
        la_kv_policy_state_destroy(s);
        return la_fail(LA_ERR_NOMEM, "la_kv_policy_state_create: no memory");
    }
    if ((p->kind == LA_KV_POLICY_DUO && (st = load_duo(s))) ||
        (p->kind == LA_KV_POLICY_SNAPKV && (st = snap_layer_budgets(s)))) {
        la_kv_policy_state_destroy(s);
        return st;
    }
    *out = s;
    return la_succeed();
}

la_status la_kv_policy_state_scores(const la_kv_policy_state *s, int64_t layer, int64_t head, const float **scores,
                                    int64_t *len) {
    if (!s || !scores || !len)
        return la_fail(LA_ERR_NULL, "la_kv_policy_state_scores: %s is NULL", !s ? "state" : !scores ? "scores" : "len");
    if (layer < 0 || layer >= s->cp.n_layers || head < 0 || head >= s->cp.n_kv_heads)
        return la_fail(LA_ERR_ARGUMENT, "la_kv_policy_state_scores: layer %lld or head %lld is out of range",
                       (long long)layer, (long long)head);
    const int64_t i = layer * s->cp.n_kv_heads + head;
    *scores = s->p.kind == LA_KV_POLICY_H2O ? s->score[i] : NULL;
    *len = *scores ? s->n_score[i] : 0;
    return la_succeed();
}

bool la_kv_policy_state_is_retrieval(const la_kv_policy_state *s, int64_t layer, int64_t head) {
    if (!s || s->p.kind != LA_KV_POLICY_DUO || layer < 0 || layer >= s->cp.n_layers || head < 0 ||
        head >= s->cp.n_kv_heads)
        return false;
    return s->retrieval[layer * s->cp.n_kv_heads + head];
}

/* ------------------------------------------------------------- helpers */

static bool grow_f(float **p, int64_t *cap, int64_t need) {
    if (need <= *cap) return true;
    /* doubling must not wrap the byte count (a wrapped realloc "succeeds" small) */
    if (need > (int64_t)(SIZE_MAX / 2 / sizeof(float))) return false;
    int64_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    float *q = realloc(*p, sizeof(float) * (size_t)c);
    if (!q) return false;
    *p = q, *cap = c;
    return true;
}

static la_status scratch(la_kv_policy_state *s, int64_t len) {
    if (len <= s->scratch_cap) return LA_OK;
    int64_t c = s->scratch_cap ? s->scratch_cap : 64;
    while (c < len) c *= 2;
    float *m = realloc(s->mass, sizeof(float) * (size_t)c);
    if (m) s->mass = m;
    float *v = m ? realloc(s->vote, sizeof(float) * (size_t)c) : NULL;
    if (v) s->vote = v;
    int32_t *a = v ? realloc(s->slots, sizeof(int32_t) * (size_t)c) : NULL;
    if (a) s->slots = a;
    keyed *b = a ? realloc(s->order, sizeof(keyed) * (size_t)c) : NULL;
    if (b) s->order = b;
    int32_t *bl = b ? realloc(s->blocks, sizeof(int32_t) * (size_t)c) : NULL;
    if (bl) s->blocks = bl;
    if (!bl) return la_fail(LA_ERR_NOMEM, "KV policy: no memory for %lld entries of scratch", (long long)len);
    s->scratch_cap = c;
    return LA_OK;
}

/* Keep slots [len - keep_last, len) and the `keep_top` others in [0, len -
 * keep_last) with the largest key[] (ties: the earlier slot); drop the
 * rest from the cache and, when sc / sc2 are not NULL, from them (arrays
 * aligned with the slots). */
static int by_key_desc(const void *a, const void *b) {
    const keyed *x = a, *y = b;
    if (x->key != y->key) return x->key > y->key ? -1 : 1;
    return x->slot < y->slot ? -1 : x->slot > y->slot;
}
static int by_slot(const void *a, const void *b) {
    const keyed *x = a, *y = b;
    return x->slot < y->slot ? -1 : x->slot > y->slot;
}

/* Remove the sorted slots[0 .. n_drop) from a[0 .. len), as compaction
 * removes them from the cache. */
static void drop_aligned(float *a, int64_t len, const int32_t *slots, int64_t n_drop) {
    int64_t w = 0, next = 0;
    for (int64_t r = 0; r < len; r++) {
        if (next < n_drop && slots[next] == r) {
            next++;
            continue;
        }
        a[w++] = a[r];
    }
}

static la_status keep_top(la_kv_policy_state *s, la_kv_cache *c, int64_t layer, int64_t head, const float *key,
                          int64_t keep_top_n, int64_t keep_last, float *sc, float *sc2) {
    const int64_t len = la_kv_cache_len(c, layer, head, 0), pre = len - keep_last;
    if (pre <= keep_top_n) return LA_OK;
    for (int64_t i = 0; i < pre; i++) s->order[i] = (keyed){isnan(key[i]) ? -INFINITY : key[i], (int32_t)i};
    qsort(s->order, (size_t)pre, sizeof *s->order, by_key_desc);
    /* the dropped: order[keep_top_n ..), sorted by slot */
    const int64_t n_drop = pre - keep_top_n;
    qsort(s->order + keep_top_n, (size_t)n_drop, sizeof *s->order, by_slot);
    for (int64_t i = 0; i < n_drop; i++) s->slots[i] = s->order[keep_top_n + i].slot;
    la_status st = la_kv_cache_compact(c, layer, head, 0, s->slots, n_drop);
    if (st) return st;
    if (sc) drop_aligned(sc, len, s->slots, n_drop);
    if (sc2) drop_aligned(sc2, len, s->slots, n_drop);
    return LA_OK;
}

/* c has the parameters of the cache s was made for, and layer is one of
 * its layers. Every parameter: the state's scratch and page bounds are
 * sized by its own cache's head_dim, page_size and max_tokens, so a cache
 * that agreed on layers and heads alone overran them. */
static la_status check_cache(const la_kv_policy_state *s, const char *fn, const la_kv_cache *c, int64_t layer) {
    const la_kv_cache_params *cp = la_kv_cache_params_of(c), *mine = &s->cp;
    if (cp->n_layers != mine->n_layers || cp->n_kv_heads != mine->n_kv_heads || cp->head_dim != mine->head_dim ||
        cp->page_size != mine->page_size || cp->max_tokens != mine->max_tokens || cp->max_seqs != mine->max_seqs ||
        cp->dtype != mine->dtype || cp->quant != mine->quant || cp->quant_key_group != mine->quant_key_group ||
        cp->quant_value_group != mine->quant_value_group || cp->quant_window != mine->quant_window ||
        cp->quant_exact_queries != mine->quant_exact_queries)
        return la_fail(LA_ERR_ARGUMENT, "%s: the cache is not the one the state was made for (its parameters differ)",
                       fn);
    if (layer < 0 || layer >= cp->n_layers)
        return la_fail(LA_ERR_ARGUMENT, "%s: layer %lld is out of range", fn, (long long)layer);
    return LA_OK;
}

static la_status check_call(const la_kv_policy_state *s, const char *fn, const la_kv_cache *c, int64_t layer,
                            const float *q, int64_t n, int64_t n_heads) {
    if (!s || !c || !q) return la_fail(LA_ERR_NULL, "%s: %s is NULL", fn, !s ? "state" : !c ? "cache" : "q");
    const la_kv_cache_params *cp = la_kv_cache_params_of(c);
    la_status st = check_cache(s, fn, c, layer);
    if (st) return st;
    /* a group below 2^31, as la_kv_attention_mass takes: the products of n,
     * n_heads and head_dim that size the scratch then fit (n is at most a
     * head's length, itself int32) */
    if (n < 1 || n_heads < 1 || n_heads % cp->n_kv_heads || n_heads / cp->n_kv_heads > INT32_MAX)
        return la_fail(LA_ERR_ARGUMENT,
                       "%s: n %lld must be >= 1 and n_heads %lld a multiple of %lld KV heads, below 2^31 times that",
                       fn, (long long)n, (long long)n_heads, (long long)cp->n_kv_heads);
    int64_t rows, elems, window = s->p.window > n ? s->p.window : n;
    if (!la_mul_i64(window, n_heads, &rows) || !la_mul_i64(rows, cp->head_dim, &elems) ||
        elems > (int64_t)(SIZE_MAX / 2 / sizeof(float)))
        return la_fail(LA_ERR_OVERFLOW, "%s: %lld queries of %lld heads do not fit in memory", fn, (long long)window,
                       (long long)n_heads);
    for (int64_t h = 0; h < cp->n_kv_heads; h++)
        if (la_kv_cache_len(c, layer, h, 0) < n)
            return la_fail(LA_ERR_ARGUMENT, "%s: head %lld holds %lld entries, fewer than the %lld queries", fn,
                           (long long)h, (long long)la_kv_cache_len(c, layer, h, 0), (long long)n);
    return LA_OK;
}

/* --------------------------------------------------------------- quest */

/* Per-channel min and max of the keys of full pages [bounded, upto), from
 * the values decode reads (la_kv_cache_read: dequantised on q8/q4 pages).
 * A page some of whose entries are still in a quantised cache's f32 window
 * is bounded anew at every call (its values change when the window
 * quantises them); `bounded` only covers pages of settled entries, so a
 * page's bounds always hold for the keys decode reads. */
static la_status quest_bounds(la_kv_policy_state *s, const la_kv_cache *c, int64_t layer, int64_t head, int64_t upto) {
    const int64_t i = layer * s->cp.n_kv_heads + head, D = s->cp.head_dim, ps = s->cp.page_size;
    const int64_t pages = (s->cp.max_tokens + ps - 1) / ps;
    if (!s->kmin[i]) {
        s->kmin[i] = malloc(sizeof(float) * (size_t)(pages * D));
        s->kmax[i] = malloc(sizeof(float) * (size_t)(pages * D));
        if (!s->kmin[i] || !s->kmax[i]) {
            free(s->kmin[i]), free(s->kmax[i]);
            s->kmin[i] = s->kmax[i] = NULL;
            return la_fail(LA_ERR_NOMEM, "KV policy quest: no memory for page bounds");
        }
    }
    if (!grow_f(&s->kf, &s->kf_cap, ps * D)) return la_fail(LA_ERR_NOMEM, "KV policy quest: no memory");
    if (s->bounded[i] > upto) s->bounded[i] = upto; /* a failed chunk's entries were dropped */
    const int64_t settled = la_kv_cache_settled_len(c, layer, head, 0) / ps;
    for (int64_t pg = s->bounded[i]; pg < upto; pg++) {
        la_status st = la_kv_cache_read(c, layer, head, 0, pg * ps, ps, s->kf, NULL);
        if (st) return st;
        float *mn = s->kmin[i] + pg * D, *mx = s->kmax[i] + pg * D;
        for (int64_t d = 0; d < D; d++) mn[d] = INFINITY, mx[d] = -INFINITY;
        for (int64_t r = 0; r < ps; r++)
            for (int64_t d = 0; d < D; d++) {
                const float x = s->kf[r * D + d];
                mn[d] = fminf(mn[d], x), mx[d] = fmaxf(mx[d], x);
            }
    }
    const int64_t done = upto < settled ? upto : settled;
    if (done > s->bounded[i]) s->bounded[i] = done;
    return LA_OK;
}

/* Decode of KV head `head`'s query heads over the pages Quest picks. */
static la_status quest_decode(la_kv_policy_state *s, la_context *ctx, const la_attention_params *ap, la_kv_cache *c,
                              int64_t layer, int64_t head, int64_t keep, const float *q, int64_t n_heads, float *out,
                              float *lse) {
    const int64_t D = s->cp.head_dim, ps = s->cp.page_size, G = n_heads / s->cp.n_kv_heads;
    const int64_t len = la_kv_cache_len(c, layer, head, 0), np = (len + ps - 1) / ps;
    la_status st = quest_bounds(s, c, layer, head, np - 1);
    if (st || (st = scratch(s, np))) return st;
    const int64_t i = layer * s->cp.n_kv_heads + head;
    for (int64_t pg = 0; pg < np - 1; pg++) {
        const float *mn = s->kmin[i] + pg * D, *mx = s->kmax[i] + pg * D;
        double best = -INFINITY;
        for (int64_t g = 0; g < G; g++) {
            const float *qr = q + (head * G + g) * D;
            double u = 0;
            for (int64_t d = 0; d < D; d++) u += fmax((double)qr[d] * mn[d], (double)qr[d] * mx[d]);
            best = fmax(best, u);
        }
        s->order[pg] = (keyed){(float)best, (int32_t)pg};
    }
    qsort(s->order, (size_t)(np - 1), sizeof *s->order, by_key_desc);
    qsort(s->order, (size_t)(keep - 1), sizeof *s->order, by_slot);
    const int32_t seqlen = (int32_t)((keep - 1) * ps + len - (np - 1) * ps);
    la_tensor qt = {.data = (void *)(q + head * G * D), .dtype = LA_F32, .ndim = 4,
                    .shape = {1, 1, G, D}, .stride = {n_heads * D, n_heads * D, D, 1}};
    la_tensor ot = qt;
    ot.data = out + head * G * D;
    la_tensor lt = {.data = lse + head * G, .dtype = LA_F32, .ndim = 3, .shape = {1, 1, G}, .stride = {n_heads, n_heads, 1}};
    if (s->cp.quant != LA_KV_QUANT_NONE) {
        /* q8/q4 pages have no tensor view: the picked pages (at most the
         * budget rounded up to pages, never the whole cache) are read back
         * dequantised, in slot order, and attended in f32 */
        if (!grow_f(&s->kf, &s->kf_cap, (int64_t)seqlen * D) || !grow_f(&s->vf, &s->vf_cap, (int64_t)seqlen * D))
            return la_fail(LA_ERR_NOMEM, "KV policy quest: no memory for %d entries", seqlen);
        for (int64_t k = 0; k < keep; k++) {
            const int64_t pg = k < keep - 1 ? s->order[k].slot : np - 1, rows = pg < np - 1 ? ps : len - pg * ps;
            if ((st = la_kv_cache_read(c, layer, head, 0, pg * ps, rows, s->kf + k * ps * D, s->vf + k * ps * D)))
                return st;
        }
        la_tensor kt = la_tensor_contiguous(s->kf, LA_F32, 4, (int64_t[]){1, seqlen, 1, D});
        la_tensor vt = la_tensor_contiguous(s->vf, LA_F32, 4, (int64_t[]){1, seqlen, 1, D});
        return la_attention_decode(ctx, ap, &qt, &kt, &vt, NULL, &ot, &lt);
    }
    la_kv_view view;
    if ((st = la_kv_cache_view(c, layer, head, 0, 1, &view))) return st;
    for (int64_t k = 0; k < keep - 1; k++) s->blocks[k] = view.layout.block_table[s->order[k].slot];
    s->blocks[keep - 1] = view.layout.block_table[np - 1];
    la_kv_layout lay = {.seqlens_k = &seqlen, .block_table = s->blocks, .blocks_per_seq = keep};
    return la_attention_decode(ctx, ap, &qt, &view.k, &view.v, &lay, &ot, &lt);
}

/* -------------------------------------------------------------- attend */

la_status la_kv_policy_attend(la_kv_policy_state *s, la_context *ctx, const la_attention_params *p, la_kv_cache *c,
                              int64_t layer, const float *q, int64_t n, int64_t n_heads, float *out) {
    static const char *fn = "la_kv_policy_attend";
    la_status st = check_call(s, fn, c, layer, q, n, n_heads);
    if (st) return st;
    if (!ctx || !p || !out) return la_fail(LA_ERR_NULL, "%s: %s is NULL", fn, !ctx ? "ctx" : !p ? "params" : "out");
    /* update scores the entries by plain causal softmax over slots: attention under any other rule would
     * not be what it scores (and a window over slots moves as eviction compacts them) */
    if (p->window_left != -1 || p->window_right != -1 || p->sinks || p->alibi_slopes ||
        p->score != LA_SCORE_SOFTMAX || p->cu_seqlens_q || p->cu_seqlens_k)
        return la_fail(LA_ERR_UNSUPPORTED,
                       "%s: the rule may set scale and softcap only (causal is forced); a window, sinks, ALiBi, "
                       "sigmoid scores or varlen offsets are not supported",
                       fn);
    const int64_t Hkv = s->cp.n_kv_heads, D = s->cp.head_dim, G = n_heads / Hkv, H = n_heads;
    if (!grow_f(&s->lse, &s->lse_cap, n * H)) return la_fail(LA_ERR_NOMEM, "%s: no memory", fn);
    s->lse_n = 0;
    la_attention_params ap = *p;
    ap.causal = 1;
    const int64_t L0 = la_kv_cache_len(c, layer, 0, 0);
    bool ragged = false;
    for (int64_t h = 1; h < Hkv; h++) ragged |= la_kv_cache_len(c, layer, h, 0) != L0;
    la_tensor qt = la_tensor_contiguous((void *)q, LA_F32, 4, (int64_t[]){1, n, H, D});
    la_tensor ot = la_tensor_contiguous(out, LA_F32, 4, (int64_t[]){1, n, H, D});
    la_tensor lt = la_tensor_contiguous(s->lse, LA_F32, 3, (int64_t[]){1, n, H});
    if (n == 1) {
        const int64_t ps = s->cp.page_size, np = (L0 + ps - 1) / ps;
        const int64_t keep = (s->p.budget + ps - 1) / ps; /* pages: a budget >= the context keeps them all */
        if (s->p.kind == LA_KV_POLICY_QUEST && !ragged && np > keep) {
            for (int64_t h = 0; h < Hkv && !st; h++) st = quest_decode(s, ctx, &ap, c, layer, h, keep, q, H, out, s->lse);
        } else {
            /* float or quantised pages, ragged or not (one call per KV head when ragged) */
            st = la_kv_cache_decode(ctx, &ap, c, layer, 0, &qt, &ot, &lt);
        }
    } else if (!ragged) {
        if (!grow_f(&s->kf, &s->kf_cap, L0 * Hkv * D)) return la_fail(LA_ERR_NOMEM, "%s: no memory", fn);
        if (!grow_f(&s->vf, &s->vf_cap, L0 * Hkv * D)) return la_fail(LA_ERR_NOMEM, "%s: no memory", fn);
        if ((st = la_kv_cache_read(c, layer, -1, 0, 0, L0, s->kf, s->vf))) return st;
        la_tensor k = la_tensor_contiguous(s->kf, LA_F32, 4, (int64_t[]){1, L0, Hkv, D});
        la_tensor v = la_tensor_contiguous(s->vf, LA_F32, 4, (int64_t[]){1, L0, Hkv, D});
        st = la_attention_forward(ctx, &ap, &qt, &k, &v, &ot, &lt);
    } else {
        for (int64_t h = 0; h < Hkv && !st; h++) {
            const int64_t Lh = la_kv_cache_len(c, layer, h, 0);
            if (!grow_f(&s->kf, &s->kf_cap, Lh * D)) return la_fail(LA_ERR_NOMEM, "%s: no memory", fn);
            if (!grow_f(&s->vf, &s->vf_cap, Lh * D)) return la_fail(LA_ERR_NOMEM, "%s: no memory", fn);
            if ((st = la_kv_cache_read(c, layer, h, 0, 0, Lh, s->kf, s->vf))) break;
            la_tensor k = la_tensor_contiguous(s->kf, LA_F32, 4, (int64_t[]){1, Lh, 1, D});
            la_tensor v = la_tensor_contiguous(s->vf, LA_F32, 4, (int64_t[]){1, Lh, 1, D});
            la_tensor qh = qt, oh = ot, lh = lt;
            qh.shape[2] = oh.shape[2] = lh.shape[2] = G;
            qh.data = (void *)(q + h * G * D), oh.data = out + h * G * D, lh.data = s->lse + h * G;
            st = la_attention_forward(ctx, &ap, &qh, &k, &v, &oh, &lh);
        }
    }
    if (st) return st;
    s->lse_layer = layer, s->lse_n = n, s->lse_heads = H;
    s->lse_scale = p->softcap > 0 ? 0 : p->scale != 0 ? p->scale : 1.0f / sqrtf((float)D);
    return la_succeed();
}

/* -------------------------------------------------------------- update */

/* vote[j] = max or mean of mass over [j - k/2, j + k/2] within [0, n). */
static void pool(const float *mass, float *vote, int64_t n, int64_t kernel, bool avg) {
    const int64_t r = kernel / 2;
    for (int64_t j = 0; j < n; j++) {
        const int64_t a = j - r < 0 ? 0 : j - r, b = j + r >= n ? n - 1 : j + r;
        double acc = avg ? 0 : -INFINITY;
        for (int64_t t = a; t <= b; t++) acc = avg ? acc + mass[t] : fmax(acc, mass[t]);
        vote[j] = (float)(avg ? acc / (double)(b - a + 1) : acc);
    }
}

/* SnapKV during a prompt: keep the last `window` queries of the prompt so
 * far (and their log-sum-exp) across chunks; select nothing until
 * la_kv_policy_end_prompt, when the window is the prompt's real end. A
 * single-token step breaks the run of prompt rows (the window restarts). */
static la_status snap_remember(la_kv_policy_state *s, int64_t layer, const float *q, int64_t n, int64_t H,
                               bool have_lse, float scale) {
    const int64_t D = s->cp.head_dim, W = s->p.window;
    if (n == 1 && !s->pending[layer]) return LA_OK; /* decode: the cache just grows */
    if (s->win_heads && s->win_heads != H)
        return la_fail(LA_ERR_ARGUMENT, "la_kv_policy_update: n_heads %lld differs from the %lld of earlier calls",
                       (long long)H, (long long)s->win_heads);
    if (!s->qwin[layer]) {
        s->qwin[layer] = malloc(sizeof(float) * (size_t)(W * H * D));
        s->lwin[layer] = malloc(sizeof(float) * (size_t)(W * H));
        if (!s->qwin[layer] || !s->lwin[layer]) {
            free(s->qwin[layer]), free(s->lwin[layer]);
            s->qwin[layer] = s->lwin[layer] = NULL;
            return la_fail(LA_ERR_NOMEM, "la_kv_policy_update: no memory for snapkv's window");
        }
    }
    s->win_heads = H, s->win_scale = scale;
    const int64_t take = n < W ? n : W, have = s->nwin[layer], keep = have < W - take ? have : W - take;
    float *qw = s->qwin[layer], *lw = s->lwin[layer];
    memmove(qw, qw + (have - keep) * H * D, sizeof(float) * (size_t)(keep * H * D));
    memmove(lw, lw + (have - keep) * H, sizeof(float) * (size_t)(keep * H));
    memcpy(qw + keep * H * D, q + (n - take) * H * D, sizeof(float) * (size_t)(take * H * D));
    if (have_lse) memcpy(lw + keep * H, s->lse + (n - take) * H, sizeof(float) * (size_t)(take * H));
    s->lwin_ok[layer] = (keep == 0 || s->lwin_ok[layer]) && have_lse;
    s->nwin[layer] = keep + take;
    s->pending[layer] = true;
    return LA_OK;
}

/* SnapKV's votes for head h's first len - W entries into s->vote: the
 * mass the prompt's last W queries (kept by snap_remember) give each
 * entry, pooled over neighbours. The window's queries are the head's last
 * W entries: nothing was evicted since they came. */
static la_status window_votes(la_kv_policy_state *s, la_context *ctx, la_kv_cache *c, int64_t layer, int64_t h,
                              int64_t len, int64_t W) {
    const int64_t H = s->win_heads, G = H / s->cp.n_kv_heads, D = s->cp.head_dim;
    la_status st = la_kv_attention_mass(ctx, c, layer, h, 0, s->qwin[layer] + h * G * D, W, G, H * D, s->win_scale,
                                        s->lwin_ok[layer] ? s->lwin[layer] + h * G : NULL, H, s->mass);
    if (!st) pool(s->mass, s->vote, len - W, s->p.kernel, s->p.pool_avg);
    return st;
}

/* snapkv with carry=G, head i holding len entries of which the first
 * `voted` have this prompt's votes in s->vote: the running votes (h2o's
 * score array, slot order, compacted with the entries by keep_top) become
 * G x earlier + this vote; entries appended since the last prompt's end
 * start from 0. */
static la_status snap_carry(la_kv_policy_state *s, int64_t i, int64_t len, int64_t voted) {
    if (s->n_score[i] > len) s->n_score[i] = len; /* a failed chunk's entries were dropped */
    if (!grow_f(&s->score[i], &s->cap[i], len)) return la_fail(LA_ERR_NOMEM, "la_kv_policy_end_prompt: no memory");
    float *a = s->score[i];
    for (int64_t j = s->n_score[i]; j < len; j++) a[j] = 0;
    s->n_score[i] = len;
    const float g = (float)s->p.carry;
    for (int64_t j = 0; j < voted; j++) a[j] = g * a[j] + (isnan(s->vote[j]) ? 0 : s->vote[j]);
    return LA_OK;
}

/* H2O with snap=S at a prompt's end, per KV head: the prompt's last W
 * queries vote (SnapKV's pooled mass) and the S best-voted entries older
 * than the R = max(recent, W) newest are pinned (the pins of the prompt
 * before are dropped); a head over budget then keeps the R newest, the
 * pinned and the heaviest others by accumulated mass. The pins stay with
 * their entries (compacted alongside the scores) so that single-token
 * steps never evict them. */
static la_status h2o_snap_select(la_kv_policy_state *s, la_context *ctx, la_kv_cache *c, int64_t layer) {
    const int64_t Hkv = s->cp.n_kv_heads, W = s->nwin[layer];
    const la_kv_policy *p = &s->p;
    const int64_t last = p->recent > W ? p->recent : W, snap = la_kv_h2o_snap(p);
    s->pending[layer] = false, s->nwin[layer] = 0;
    for (int64_t h = 0; h < Hkv; h++) {
        const int64_t len = la_kv_cache_len(c, layer, h, 0), i = layer * Hkv + h, pre = len - last;
        if (s->n_score[i] != len)
            return la_fail(LA_ERR_ARGUMENT, "la_kv_policy_end_prompt: head %lld holds %lld entries, %lld scored "
                           "(every prompt chunk goes through la_kv_policy_update)",
                           (long long)h, (long long)len, (long long)s->n_score[i]);
        float *pin = s->pin[i];
        for (int64_t j = 0; j < len; j++) pin[j] = 0;
        if (pre <= 0) continue;
        la_status st = scratch(s, len);
        if (st) return st;
        if ((st = window_votes(s, ctx, c, layer, h, len, W))) return st;
        for (int64_t j = 0; j < pre; j++) s->order[j] = (keyed){isnan(s->vote[j]) ? -INFINITY : s->vote[j], (int32_t)j};
        qsort(s->order, (size_t)pre, sizeof *s->order, by_key_desc);
        for (int64_t t = 0; t < snap && t < pre; t++) pin[s->order[t].slot] = 1;
        if (len <= p->budget) continue;
        for (int64_t j = 0; j < len; j++) s->mass[j] = pin[j] != 0 ? INFINITY : s->score[i][j];
        if ((st = keep_top(s, c, layer, h, s->mass, p->budget - last, last, s->score[i], pin))) return st;
        s->n_score[i] = p->budget;
    }
    return LA_OK;
}

/* SnapKV's selection with adapt=F (Ada-KV's budget allocation): every
 * head's votes first (window_votes), then each head keeps its best
 * floor((1 - F) x (BUDGET - R)) candidates and the layer's other voted
 * slots go to the best remaining votes of any head, merged head by head
 * (ties: the earlier head); each head then keeps its R newest and its top
 * count by vote (keep_top, the same order). Counts are not rounded to
 * pages: rounding a 160-entry share to 256-entry pages left a head its
 * window alone (README's text at 25%: perplexity 39 -> 145), so a
 * ragged layer may hold a partial page per head beyond an even split's
 * pages (the eval's share says how much). */
static la_status snap_select_adapt(la_kv_policy_state *s, la_context *ctx, la_kv_cache *c, int64_t layer) {
    const int64_t Hkv = s->cp.n_kv_heads, W = s->nwin[layer];
    const la_kv_policy *p = &s->p;
    const int64_t last = p->recent > W ? p->recent : W, budget = s->layer_budget[layer];
    s->pending[layer] = false, s->nwin[layer] = 0;
    int64_t *len = calloc((size_t)(4 * Hkv + 1), sizeof *len), total = 0;
    if (!len) {
        return la_fail(LA_ERR_NOMEM, "la_kv_policy_end_prompt: no memory");
    }
    int64_t *pre = len + Hkv, *take = pre + Hkv, *off = take + Hkv; /* off: Hkv + 1 */
    for (int64_t h = 0; h < Hkv; h++) {
        len[h] = la_kv_cache_len(c, layer, h, 0);
        if (len[h] < W) {
            const int64_t have = len[h];
            free(len);
            return la_fail(LA_ERR_ARGUMENT, "la_kv_policy_end_prompt: head %lld holds %lld entries, fewer than the "
                           "window's %lld queries",
                           (long long)h, (long long)have, (long long)W);
        }
        pre[h] = len[h] - last > 0 ? len[h] - last : 0;
        total += len[h], off[h + 1] = off[h] + pre[h];
    }
    const int64_t room = Hkv * budget; /* the layer's entries, as Hkv heads of its budget */
    if (total <= room) {
        free(len);
        return LA_OK;
    }
    /* per head: votes in slot order (vote) and sorted best first (order) */
    float *vote = malloc(sizeof(float) * (size_t)(off[Hkv] + 1));
    keyed *order = malloc(sizeof(keyed) * (size_t)(off[Hkv] + 1));
    la_status st = vote && order ? LA_OK : la_fail(LA_ERR_NOMEM, "la_kv_policy_end_prompt: no memory for votes");
    for (int64_t h = 0; h < Hkv && !st; h++) {
        if (!pre[h]) continue;
        if ((st = scratch(s, len[h])) || (st = window_votes(s, ctx, c, layer, h, len[h], W))) break;
        for (int64_t j = 0; j < pre[h]; j++) {
            vote[off[h] + j] = s->vote[j];
            order[off[h] + j] = (keyed){isnan(s->vote[j]) ? -INFINITY : s->vote[j], (int32_t)j};
        }
        qsort(order + off[h], (size_t)pre[h], sizeof *order, by_key_desc);
    }
    if (!st) {
        int64_t voted = room;
        for (int64_t h = 0; h < Hkv; h++) voted -= len[h] - pre[h]; /* what the newest leave for votes */
        const int64_t floor_n = (int64_t)((1 - p->adapt) * (double)(budget - last));
        for (int64_t h = 0; h < Hkv; h++) take[h] = pre[h] < floor_n ? pre[h] : floor_n, voted -= take[h];
        for (; voted > 0; voted--) { /* the best next vote of any head */
            int64_t best = -1;
            for (int64_t h = 0; h < Hkv; h++)
                if (take[h] < pre[h] && (best < 0 || order[off[h] + take[h]].key > order[off[best] + take[best]].key))
                    best = h;
            if (best < 0) break;
            take[best]++;
        }
        for (int64_t h = 0; h < Hkv && !st; h++)
            if (take[h] < pre[h] && !(st = scratch(s, len[h])))
                st = keep_top(s, c, layer, h, vote + off[h], take[h], len[h] - pre[h], NULL, NULL);
    }
    free(vote), free(order), free(len);
    return st;
}

la_status la_kv_policy_end_prompt(la_kv_policy_state *s, la_context *ctx, la_kv_cache *c, int64_t layer) {
    static const char *fn = "la_kv_policy_end_prompt";
    if (!s || !c) return la_fail(LA_ERR_NULL, "%s: %s is NULL", fn, !s ? "state" : "cache");
    la_status st = check_cache(s, fn, c, layer);
    if (st) return st;
    s->prompt_done[layer] = true;
    if (!s->pending[layer]) return la_succeed();
    if (s->p.kind == LA_KV_POLICY_H2O) return h2o_snap_select(s, ctx, c, layer);
    const int64_t Hkv = s->cp.n_kv_heads, W = s->nwin[layer];
    const la_kv_policy *p = &s->p;
    if (p->adapt > 0) return snap_select_adapt(s, ctx, c, layer);
    s->pending[layer] = false, s->nwin[layer] = 0;
    const int64_t budget = s->layer_budget[layer];
    const int64_t last = p->recent > W ? p->recent : W; /* the newest always stay */
    for (int64_t h = 0; h < Hkv; h++) {
        const int64_t len = la_kv_cache_len(c, layer, h, 0);
        if (len <= budget && p->carry == 0) continue;
        if (len < W)
            return la_fail(LA_ERR_ARGUMENT, "%s: head %lld holds %lld entries, fewer than the window's %lld queries",
                           fn, (long long)h, (long long)len, (long long)W);
        if ((st = scratch(s, len))) return st;
        if ((st = window_votes(s, ctx, c, layer, h, len, W))) return st;
        const int64_t i = layer * Hkv + h;
        if (p->carry > 0 && (st = snap_carry(s, i, len, len - W))) return st;
        if (len <= budget) continue;
        float *carried = p->carry > 0 ? s->score[i] : NULL; /* ranks by, and is compacted with, the entries */
        if ((st = keep_top(s, c, layer, h, carried ? carried : s->vote, budget - last, last, carried, NULL))) return st;
        if (carried) s->n_score[i] = budget;
    }
    return la_succeed();
}

la_status la_kv_policy_update(la_kv_policy_state *s, la_context *ctx, la_kv_cache *c, int64_t layer, const float *q,
                              int64_t n, int64_t n_heads, float scale) {
    static const char *fn = "la_kv_policy_update";
    la_status st = check_call(s, fn, c, layer, q, n, n_heads);
    if (st) return st;
    /* here, for every policy: snapkv keeps the scale for the prompt's end, which would fail there instead */
    if (!isfinite(scale)) return la_fail(LA_ERR_ARGUMENT, "%s: scale %g is not finite", fn, (double)scale);
    const int64_t Hkv = s->cp.n_kv_heads, D = s->cp.head_dim, G = n_heads / Hkv, H = n_heads;
    /* the attend's log-sum-exp normalise the masses only when they are plain softmax's at this scale: a
     * softcap or another scale there made every mass exp(s - lse) miss its probability (sums far
     * from 1 a query head); otherwise la_kv_attention_mass computes them itself */
    const float want_scale = scale != 0 ? scale : 1.0f / sqrtf((float)D);
    const bool have_lse = s->lse_n == n && s->lse_layer == layer && s->lse_heads == H && s->lse_scale == want_scale;
    const la_kv_policy *p = &s->p;
    if (n > 1) s->prompt_done[layer] = false; /* a new prompt (or its first piece) */
    if (p->kind == LA_KV_POLICY_SNAPKV) return snap_remember(s, layer, q, n, H, have_lse, scale);
    /* h2o with snap: a prompt's chunks only score (and keep the window's
     * queries); it selects at la_kv_policy_end_prompt */
    const int64_t snap = la_kv_h2o_snap(p);
    const bool defer = p->kind == LA_KV_POLICY_H2O && snap > 0 && (n > 1 || s->pending[layer]);
    if (defer && (st = snap_remember(s, layer, q, n, H, have_lse, scale))) return st;
    for (int64_t h = 0; h < Hkv; h++) {
        const int64_t len = la_kv_cache_len(c, layer, h, 0), i = layer * Hkv + h;
        if ((st = scratch(s, len))) return st;
        switch (p->kind) {
        case LA_KV_POLICY_H2O: {
            /* entries before this chunk keep their scores; a failed chunk's leftovers are dropped */
            if (s->n_score[i] > len - n) s->n_score[i] = len - n;
            const int64_t from = s->n_score[i];
            if (!grow_f(&s->score[i], &s->cap[i], len) ||
                (snap > 0 && !grow_f(&s->pin[i], &s->pin_cap[i], len)))
                return la_fail(LA_ERR_NOMEM, "%s: no memory", fn);
            for (int64_t j = from; j < len; j++) s->score[i][j] = 0;
            for (int64_t j = from; j < len && snap > 0; j++) s->pin[i][j] = 0;
            s->n_score[i] = len;
            if ((st = la_kv_attention_mass(ctx, c, layer, h, 0, q + h * G * D, n, G, H * D, scale,
                                           have_lse ? s->lse + h * G : NULL, H, s->mass)))
                return st;
            for (int64_t j = 0; j < len; j++) s->score[i][j] += s->mass[j];
            /* decode=grow: after a prompt's end, single-token steps only score (the prompt's selection
             * stands); a one-token call before it is a piece of the prompt and evicts */
            if (defer || len <= p->budget || (p->decode_grow && n == 1 && s->prompt_done[layer])) break;
            const float *key = s->score[i];
            if (snap > 0) { /* pinned entries rank above every score */
                for (int64_t j = 0; j < len; j++) s->mass[j] = s->pin[i][j] != 0 ? INFINITY : s->score[i][j];
                key = s->mass;
            }
            if ((st = keep_top(s, c, layer, h, key, p->budget - p->recent, p->recent, s->score[i],
                               snap > 0 ? s->pin[i] : NULL)))
                return st;
            s->n_score[i] = p->budget;
            break;
        }
        case LA_KV_POLICY_DUO: {
            if (s->retrieval[i] || len <= p->budget) break;
            const int64_t n_drop = len - p->budget;
            for (int64_t j = 0; j < n_drop; j++) s->slots[j] = (int32_t)(p->sinks + j);
            if ((st = la_kv_cache_compact(c, layer, h, 0, s->slots, n_drop))) return st;
            break;
        }
        default: break;
        }
    }
    return la_succeed();
}
