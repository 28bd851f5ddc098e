/* Exact attention backward by recomputation, FlashAttention-2 style, written
 * once and compiled per instruction set (see cpu/isa.h).
 *
 * For one (sequence, K/V head) group and one chunk of at most QUERY_CHUNK
 * query rows at a time:
 *  1. Pack the G query heads' q and dout rows into f32 panels padded to Dp
 *     (a multiple of the vector length) and compute delta_i = dout_i . out_i
 *     and the saved lse per row (shared, read-only afterwards).
 *  2. Threads take key blocks of BK keys (dynamic schedule: causal blocks
 *     differ in cost). A thread owns dK, dV of its block in f32 scratch and
 *     loops over every query block of every query head of the group:
 *        S  = Q K^T        (recomputed)      dP = dO V^T
 *        P  = exp(s - lse) or sigmoid(s)     dS = P (dP - delta) or dP P (1 - P)
 *        dV += P^T dO      dK += dS^T Q      dQ_thread += dS K
 *     dS already carries d(score)/d(q.k): the scale and the softcap's tanh'.
 *     dK, dV are stored after the last chunk.
 *  3. dQ = sum of the threads' f32 partials, converted and stored.
 * When there are many short groups (few key blocks each), threads instead
 * take whole groups, with their own panels; then a thread's dQ partial is
 * the group's whole dQ and no barrier separates the steps.
 *
 * Why per-thread dQ partials rather than a second pass that owns query
 * blocks: the second pass recomputes S and dP, seven matrix products per
 * tile instead of five (40% more work), while the partials cost
 * threads x G x min(Lq, QUERY_CHUNK) x Dp floats of scratch and one reduction
 * pass that reads them once, which is small next to the Lq x Lk x D work:
 * zeroing and reducing took about 0.3% of the run under perf at L = 4096,
 * D = 128, 2 threads.
 * No atomics, no races: every output element has one writer.
 *
 * All five products go through the register-blocked tile GEMM shared with
 * the forward (tile_gemm.h), which reads A by scalar broadcasts through two
 * strides (so P^T and dS^T need no transposed copy) and B as a row-major f32
 * panel. S and dP use K^T / V^T panels packed once per key block. */
#include "cpu/attention/backward_tile.h"

/* Every query tile of the chunk, for every head of the group. */
static void dense_tiles(const group *g, scratch *w, float *dk, float *dv, int64_t j0, int64_t nk) {
    for (int64_t gi = 0; gi < g->G; gi++) query_rows(g, w, dk, dv, gi, g->c0, g->c0 + g->cn, j0, nk);
}

la_status LA_ISA_FN(la_cpu_attention_backward_workspace)(const la_attn_problem *p, size_t *bytes) {
    layout L = {0};
    la_status st = plan(p, BK, &L);
    *bytes = st ? 0 : L.bytes;
    return st;
}

la_status LA_ISA_FN(la_cpu_attention_backward_kernel)(const la_attn_backward_problem *bp, void *mem) {
    return backward_run(bp, mem, BK, dense_tiles, NULL);
}
