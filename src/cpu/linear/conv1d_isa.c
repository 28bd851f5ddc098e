/* The short causal depthwise convolution of Mamba blocks, forward and
 * backward, written once and compiled per ISA.
 *
 * An item is a block of CONV_CB channels (of one sequence in the forward,
 * of every sequence in the backward, so dweight and dbias have one
 * writer); every operation is vectorised over the block's channels (the
 * contiguous last dim). Inputs are indexed by position: positions
 * 0..W-2 are the state's columns (the W - 1 inputs before the sequence),
 * position W - 1 + t is token t. A ring of W rows holds the inputs token t
 * reads (positions t .. t + W - 1), so the state and the first tokens need
 * no special case:
 *   pre_t = bias + sum_j weight[j] win[(t + j) % W],  out_t = act(pre_t)
 * and the final state is positions len .. len + W - 2.
 * Backward, per token in order: dpre_t = dout_t act'(pre_t); dweight[j] +=
 * dpre_t x(t + j); position t + j collects weight[j] dpre_t in a second
 * ring; position t is complete after token t (its last reader) and is
 * written out (to dx, or to dinitial_state for the state's positions) with
 * the final state's gradient added where it is one of those positions. */
#include "cpu/linear/scan_common.h"

/* Channels per item: a few vectors of every ISA per token. */
#define CONV_CB 64

static size_t scratch_floats(const la_conv1d_problem *p) {
    /* weights transposed [W][CB], input ring, gradient ring [W][CB], dweight [W][CB], 4 rows */
    return (size_t)(4 * p->W * CONV_CB + 4 * CONV_CB);
}

la_status LA_ISA_FN(la_cpu_conv1d_workspace)(const la_conv1d_problem *p, size_t *bytes) {
    const int nthreads = p->head.threads > 0 ? p->head.threads : 1;
    if (!la_mul_size(scratch_floats(p) * sizeof(float), (size_t)nthreads, bytes))
        return la_fail(LA_ERR_OVERFLOW, "causal conv1d workspace size overflows");
    return LA_OK;
}

typedef struct {
    float *wt, *win, *gwin, *dw, *bias, *row, *row2, *dbias;
} conv_scratch;

static conv_scratch scratch_at(float *base, int64_t W) {
    conv_scratch s;
    s.wt = base;
    s.win = s.wt + W * CONV_CB;
    s.gwin = s.win + W * CONV_CB;
    s.dw = s.gwin + W * CONV_CB;
    s.bias = s.dw + W * CONV_CB;
    s.row = s.bias + CONV_CB;
    s.row2 = s.row + CONV_CB;
    s.dbias = s.row2 + CONV_CB;
    return s;
}

/* The block's weights as rows over channels, its bias (0 without). */
static void load_params(const la_conv1d_problem *p, conv_scratch *s, int64_t d0, int64_t cb) {
    for (int64_t j = 0; j < p->W; j++)
        for (int64_t c = 0; c < CONV_CB; c++) s->wt[j * CONV_CB + c] = c < cb ? la_scan_row(&p->weight, 0, d0 + c)[j] : 0;
    for (int64_t c = 0; c < CONV_CB; c++)
        s->bias[c] = c < cb && p->bias.data ? la_scan_row(&p->bias, 0, 0)[d0 + c] : 0;
}

/* Ring rows 0..W-2 from the state (positions 0..W-2), or 0. */
static void load_ring(const la_conv1d_problem *p, conv_scratch *s, int64_t b, int64_t d0, int64_t cb) {
    for (int64_t j = 0; j < p->W - 1; j++)
        for (int64_t c = 0; c < CONV_CB; c++)
            s->win[j * CONV_CB + c] = c < cb && p->state_in.data ? la_scan_row(&p->state_in, b, d0 + c)[j] : 0;
}

/* pre-activation of token t (ring already holding position t + W - 1). */
static void conv_pre(const la_conv1d_problem *p, const conv_scratch *s, int64_t t, float *pre) {
    const int64_t W = p->W;
    for (int64_t c = 0; c < CONV_CB; c += LA_VL) {
        vf acc = vf_load(s->bias + c);
        for (int64_t j = 0; j < W; j++)
            acc = vf_fma(vf_load(s->wt + j * CONV_CB + c), vf_load(s->win + ((t + j) % W) * CONV_CB + c), acc);
        vf_store(pre + c, acc);
    }
}

static void forward_item(const la_conv1d_problem *p, conv_scratch *s, int64_t b, int64_t d0, int64_t cb) {
    const int64_t W = p->W, bt = p->head.cu ? 0 : b;
    int64_t t0, len;
    la_scan_seq(&p->head, b, &t0, &len);
    load_params(p, s, d0, cb);
    load_ring(p, s, b, d0, cb);
    for (int64_t t = 0; t < len; t++) {
        tg_load_row(s->win + ((t + W - 1) % W) * CONV_CB, la_attn_at(&p->x, bt, t0 + t, d0), p->x.dtype, cb,
                    CONV_CB);
        conv_pre(p, s, t, s->row);
        if (p->silu)
            for (int64_t c = 0; c < CONV_CB; c += LA_VL) {
                const vf x = vf_load(s->row + c);
                vf_store(s->row + c, x * scan_sigmoid_v(x));
            }
        tg_store_row(la_attn_at(&p->out, bt, t0 + t, d0), p->out.dtype, s->row, cb);
    }
    if (p->state_out.data)
        for (int64_t j = 0; j < W - 1; j++)
            for (int64_t c = 0; c < cb; c++)
                la_scan_row(&p->state_out, b, d0 + c)[j] = s->win[((len + j) % W) * CONV_CB + c];
}

la_status LA_ISA_FN(la_cpu_conv1d_forward)(const la_conv1d_problem *p, void *mem) {
    const int nthreads = p->head.threads > 0 ? p->head.threads : 1;
    const size_t per_thread = scratch_floats(p);
    const int64_t blocks = (p->D + CONV_CB - 1) / CONV_CB, items = p->head.num_seqs * blocks;
#pragma omp parallel num_threads(nthreads)
    {
        conv_scratch s = scratch_at((float *)mem + (size_t)la_thread_id() * per_thread, p->W);
#pragma omp for schedule(dynamic, 1)
        for (int64_t it = 0; it < items; it++) {
            const int64_t b = it / blocks, d0 = (it % blocks) * CONV_CB;
            forward_item(p, &s, b, d0, p->D - d0 < CONV_CB ? p->D - d0 : CONV_CB);
        }
    }
    return LA_OK;
}

/* Position q of sequence b is complete: its gradient (ring row) plus the
 * final state's where q is one of its positions, out to dx or the initial
 * state's gradient; the ring row is cleared for position q + W. */
static void emit(const la_conv1d_backward_problem *bp, conv_scratch *s, int64_t b, int64_t t0, int64_t len,
                 int64_t q, int64_t d0, int64_t cb) {
    const la_conv1d_problem *p = &bp->fwd;
    const int64_t W = p->W, bt = p->head.cu ? 0 : b;
    float *g = s->gwin + (q % W) * CONV_CB;
    if (bp->dstate_out.data && q >= len && q - len < W - 1)
        for (int64_t c = 0; c < cb; c++) g[c] += la_scan_row(&bp->dstate_out, b, d0 + c)[q - len];
    if (q >= W - 1) tg_store_row(la_attn_at(&bp->dx, bt, t0 + q - (W - 1), d0), bp->dx.dtype, g, cb);
    else if (bp->dstate_in.data)
        for (int64_t c = 0; c < cb; c++) la_scan_row(&bp->dstate_in, b, d0 + c)[q] = g[c];
    memset(g, 0, CONV_CB * sizeof(float));
}

static void backward_item(const la_conv1d_backward_problem *bp, conv_scratch *s, int64_t d0, int64_t cb) {
    const la_conv1d_problem *p = &bp->fwd;
    const int64_t W = p->W;
    load_params(p, s, d0, cb);
    memset(s->dw, 0, (size_t)(W * CONV_CB) * sizeof(float));
    memset(s->dbias, 0, CONV_CB * sizeof(float));
    for (int64_t b = 0; b < p->head.num_seqs; b++) {
        const int64_t bt = p->head.cu ? 0 : b;
        int64_t t0, len;
        la_scan_seq(&p->head, b, &t0, &len);
        load_ring(p, s, b, d0, cb);
        memset(s->gwin, 0, (size_t)(W * CONV_CB) * sizeof(float));
        for (int64_t t = 0; t < len; t++) {
            tg_load_row(s->win + ((t + W - 1) % W) * CONV_CB, la_attn_at(&p->x, bt, t0 + t, d0), p->x.dtype, cb,
                        CONV_CB);
            conv_pre(p, s, t, s->row);
            tg_load_row(s->row2, la_attn_at(&bp->dout, bt, t0 + t, d0), bp->dout.dtype, cb, CONV_CB);
            for (int64_t c = 0; c < CONV_CB; c += LA_VL) {
                vf dpre = vf_load(s->row2 + c);
                if (p->silu) {
                    const vf x = vf_load(s->row + c), sg = scan_sigmoid_v(x);
                    dpre = dpre * sg * (vf_set1(1.0f) + x * (vf_set1(1.0f) - sg));
                }
                vf_store(s->dbias + c, vf_load(s->dbias + c) + dpre);
                for (int64_t j = 0; j < W; j++) {
                    const int64_t r = ((t + j) % W) * CONV_CB + c;
                    vf_store(s->dw + j * CONV_CB + c, vf_fma(dpre, vf_load(s->win + r), vf_load(s->dw + j * CONV_CB + c)));
                    vf_store(s->gwin + r, vf_fma(dpre, vf_load(s->wt + j * CONV_CB + c), vf_load(s->gwin + r)));
                }
            }
            emit(bp, s, b, t0, len, t, d0, cb);
        }
        for (int64_t q = len; q < len + W - 1; q++) emit(bp, s, b, t0, len, q, d0, cb);
    }
    for (int64_t c = 0; c < cb; c++) {
        for (int64_t j = 0; j < W; j++) la_scan_row(&bp->dweight, 0, d0 + c)[j] = s->dw[j * CONV_CB + c];
        if (bp->dbias.data) la_scan_row(&bp->dbias, 0, 0)[d0 + c] = s->dbias[c];
    }
}

la_status LA_ISA_FN(la_cpu_conv1d_backward)(const la_conv1d_backward_problem *bp, void *mem) {
    const la_conv1d_problem *p = &bp->fwd;
    const int nthreads = p->head.threads > 0 ? p->head.threads : 1;
    const size_t per_thread = scratch_floats(p);
    const int64_t blocks = (p->D + CONV_CB - 1) / CONV_CB;
#pragma omp parallel num_threads(nthreads)
    {
        conv_scratch s = scratch_at((float *)mem + (size_t)la_thread_id() * per_thread, p->W);
#pragma omp for schedule(dynamic, 1)
        for (int64_t it = 0; it < blocks; it++) {
            const int64_t d0 = it * CONV_CB;
            backward_item(bp, &s, d0, p->D - d0 < CONV_CB ? p->D - d0 : CONV_CB);
        }
    }
    return LA_OK;
}
