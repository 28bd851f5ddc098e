/* What the selector tests share (test_sparse_select.c and the tests of
 * each later selector): a random q/k problem, the rule element-wise from
 * the header's words, index validity (valid, nothing the rule hides
 * listed), equality of two indexes, and recall and density recomputed
 * from the dense probabilities in double against la_block_index_quality. */
#ifndef LA_SELECT_CHECK_H
#define LA_SELECT_CHECK_H

#include "longattn.h"
#include "test_util.h"

typedef struct {
    int64_t B, L, Lk, H, Hkv, D;
    la_attention_params p;
    float slopes[16];
    tu_buf q, k;
} sc_problem;

/* q [B, L, H, D], k [B, Lk, Hkv, D] uniform in [-1, 1] (k strided at
 * random); alibi: random slopes, which live in the problem (it must not
 * move once made). */
void sc_make(sc_problem *out, uint64_t *rng, int64_t B, int64_t L, int64_t Lk, int64_t H, int64_t Hkv, int64_t D,
          la_attention_params p, bool alibi);
void sc_drop(sc_problem *P);
/* The planted problems: causal, B 1, L = Lk = 512, 2 query heads over 1
 * K/V head, D 16; head 0's queries near one direction and keys [j0, j1)
 * of K/V head 0 along it with every component `key` (keys 3, a block;
 * 4, one column), so a selector must list them. */
void sc_make_planted(sc_problem *out, uint64_t *rng, int64_t j0, int64_t j1, double key);
bool sc_visible(const la_attention_params *p, int64_t i, int64_t j, int64_t Lq, int64_t Lk);
bool sc_block_visible(const la_attention_params *p, int64_t qb, int64_t kb, int64_t bs, int64_t Lq, int64_t Lk);
/* Whether the row lists key block kb; listed_key: key j, by block or column. */
bool sc_listed(const la_block_index *x, int64_t b, int64_t h, int64_t qb, int64_t kb);
bool sc_listed_key(const la_block_index *x, int64_t b, int64_t h, int64_t qb, int64_t j);
bool sc_same_index(const la_block_index *a, const la_block_index *b);
/* Head h of every sequence lists the same key blocks in x and y (same
 * shapes; extra columns not compared). */
bool sc_same_head(const la_block_index *x, const la_block_index *y, int64_t h);
void sc_check_valid(const sc_problem *P, const la_block_index *x, const char *what);
void sc_brute_quality(const sc_problem *P, const la_block_index *x, double *recall, double *density);
void sc_check_quality(la_context *ctx, const sc_problem *P, const la_block_index *x, const char *what);

/* The random problem of the selector tests: causal or not, a window and
 * sinks at times (softcap 4 at times when softcap), L and Lk in [1, 160],
 * B 1-2, 4 query heads over 2 or 4 K/V heads, D 8, random ALiBi slopes at
 * times. */
void sc_make_random(sc_problem *out, uint64_t *rng, bool softcap);
/* One selector call on P's q and k with options opts. */
typedef la_status (*sc_select_fn)(la_context *ctx, const void *opts, const sc_problem *P, la_block_index *out);
/* Runs fn on ctx and on a one-thread context: both LA_OK, the index valid,
 * the same both times, its quality figures agreeing with the brute-force
 * ones; the first index into *out (the caller frees it). */
/* The library's selectors as sc_select_fn (static ignores ctx). */
la_status sc_run_static(la_context *ctx, const void *opts, const sc_problem *P, la_block_index *out);
la_status sc_run_topk(la_context *ctx, const void *opts, const sc_problem *P, la_block_index *out);
la_status sc_run_vslash(la_context *ctx, const void *opts, const sc_problem *P, la_block_index *out);
la_status sc_run_hip(la_context *ctx, const void *opts, const sc_problem *P, la_block_index *out);
la_status sc_run_chunks(la_context *ctx, const void *opts, const sc_problem *P, la_block_index *out);
void sc_check_selector(la_context *ctx, const sc_problem *P, sc_select_fn fn, const void *opts, const char *what,
                       la_block_index *out);

#endif
