/* `longattn bench linear`'s sweeps over the linear mixers (issue 9):
 *  - the length sweep: every mixer's chunked forward (and backward) at
 *    growing lengths, after the library's exact causal attention at the same
 *    shapes (as far as the perf runner's budget affords it: the rows it
 *    skips say so). Each row carries, after the harness's fields, its time
 *    per token (ns_per_token), its time and time per token against the
 *    anchor row of its series (time_vs_anchor, per_token_vs_anchor; anchor
 *    4096 tokens: the flatness target reads time(1M) / time(4K) <= 260),
 *    exact attention's time at the same length over its own (vs_attention,
 *    when that row ran), and its memory: the recurrent state of one
 *    sequence batch (state_bytes) and the number of chunks, the chunked
 *    form keeping one state per (sequence, head) and chunk boundary
 *    in turn (chunks x state_bytes is what a form storing every chunk's
 *    state would hold; the harness's bytes_per_token is the workspace the
 *    call really took, over its tokens).
 *  - the decode rows: one decode step of each mixer (linear attention, the
 *    delta rule, the gated delta rule, the Mamba scan, the Titans memory)
 *    on a batch whose states exceed the caches, as GB/s of the state read
 *    and written once, against the read bandwidth (the harness's ratio) and
 *    against the read-modify-write bandwidth la_peak_update_gbps measures
 *    right after the row (rw_peak_gbps, rw_ratio: the goal >= 0.6). */
#ifndef LA_MIXER_SWEEP_H
#define LA_MIXER_SWEEP_H

#include "harness.h"
#include "longattn.h"

#include <stdbool.h>
#include <stdint.h>

enum {
    MIXER_LINEAR = 1 << 0, /* linear attention (the sweep's decay, feature map) and, beside it, Titans */
    MIXER_DELTA = 1 << 1,
    MIXER_GATED_DELTA = 1 << 2,
    MIXER_MAMBA = 1 << 3, /* H x D channels, N 16 */
    MIXER_AAREN = 1 << 4, /* H x D / 64 heads of 64 */
    MIXER_TITANS = 1 << 5,
    MIXER_ALL = (1 << 6) - 1
};

typedef struct {
    int64_t B, H, D, chunk;
    const int64_t *L;
    int nL;
    unsigned mixers; /* MIXER_* */
    int64_t mamba_width, aaren_width; /* 0: H x D */
    la_decay_kind decay;
    la_feature_map feature;
    bool bwd;
    bool with_attention;
    int64_t anchor_L; /* the row each series' ratios are to (0: 4096) */
} mixer_sweep;

/* Adds the length sweep's rows (each wraps an op's own case) to list. */
void mixer_sweep_cases(harness_list *list, const mixer_sweep *s);

/* The decode rows: B sequences of H heads of Dk = Dv = D (Mamba: H x D
 * channels, N 16), one token each; B 0 picks one so that each mixer's
 * states take about 128 MiB. Linear attention's row runs feature and
 * decay (Taylor: Dk 16; Hedgehog: D / 2 projections), its rows carry
 * them; the other mixers' rows take neither. threads: the bench's (the
 * read-modify-write ceiling runs on as many). */
void mixer_decode_cases(harness_list *list, unsigned mixers, int64_t B, int64_t H, int64_t D, la_feature_map feature,
                        la_decay_kind decay, int threads);

/* Frees what the wrappers of mixer_sweep_cases own (call after
 * harness_list_free). */
void mixer_sweep_release(void);

#endif
