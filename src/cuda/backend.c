/* The CUDA backend's table: checks that a problem fits the GPU kernels,
 * gives each call device workspace from its context, copies the call's host
 * arrays there and launches the kernels on the context's stream.
 *
 * Every CUDA call is checked and turned into a status with CUDA's message;
 * nothing here aborts. The runtime is linked statically and opens the
 * driver on first use, so on a machine with no driver or GPU these calls
 * fail with LA_ERR_DEVICE ("no CUDA device: ...") and the CPU backend runs
 * as before.
 *
 * Host arrays in the API (cu_seqlens_q/k, alibi_slopes, and decode's
 * seqlens_k and block_table) are read on the host
 * by the op layer's checks, then copied into the device workspace on the
 * call's stream (cudaMemcpyAsync from pageable memory stages them before it
 * returns, so the caller may free them when the call returns). Tensors must
 * be device memory (or managed memory) of the GPU their device.index names:
 * cudaPointerGetAttributes catches ordinary host memory (LA_ERR_DEVICE);
 * host memory registered with CUDA or mapped into the device's address
 * space passes this check, as it is valid for the kernels to read. */
#include "cuda/cuda_backend.h"

#include "cuda/attention/backward.h"
#include "cuda/attention/decode.h"
#include "cuda/attention/forward.h"
#include "cuda/attention/kv_append.h"
#include "cuda/attention/merge.h"
#include "cuda/attention/sparse.h"

#include <cuda_runtime_api.h>
#include <stdlib.h>
#include <string.h>

/* The context's device scratch (ctx->device_scratch). `done` is recorded
 * after each call's work, so a regrow or a call on another stream waits for
 * the kernels that may still read the old memory. */
typedef struct {
    void *mem;
    size_t bytes;
    int device;
    cudaEvent_t done;
    la_sparse_tile_cache tiles; /* host memory of the block-sparse calls' tile lists */
} cuda_scratch;

static la_status cuda_fail(cudaError_t e, const char *what) {
    la_status s = e == cudaErrorMemoryAllocation ? LA_ERR_NOMEM : LA_ERR_DEVICE;
    if (e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver)
        return la_fail(s, "no CUDA device: %s failed: %s (%s)", what, cudaGetErrorName(e), cudaGetErrorString(e));
    return la_fail(s, "CUDA %s failed: %s (%s)", what, cudaGetErrorName(e), cudaGetErrorString(e));
}
#define CUDA_TRY(call)                                          \
    do {                                                        \
        cudaError_t e_ = (call);                                \
        if (e_ != cudaSuccess) return cuda_fail(e_, #call);     \
    } while (0)

int la_cuda_available(void) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        cuda_fail(e, "cudaGetDeviceCount");
        return 0;
    }
    if (n == 0) {
        la_fail(LA_ERR_DEVICE, "no CUDA device: the driver reports none");
        return 0;
    }
    la_succeed();
    return 1;
}

/* Make `device` current for the call; restore the caller's on leaving. */
typedef struct {
    int prev;
    bool changed;
} device_guard;

static la_status guard_enter(int device, device_guard *g) {
    g->changed = false;
    CUDA_TRY(cudaGetDevice(&g->prev));
    if (g->prev != device) {
        CUDA_TRY(cudaSetDevice(device));
        g->changed = true;
    }
    return LA_OK;
}
static void guard_leave(const device_guard *g) {
    if (g->changed) cudaSetDevice(g->prev);
}

static void scratch_release(la_context *ctx) {
    cuda_scratch *sc = ctx->device_scratch;
    if (!sc) return;
    device_guard g;
    if (guard_enter(sc->device, &g) == LA_OK) {
        cudaEventSynchronize(sc->done);
        cudaFree(sc->mem);
        cudaEventDestroy(sc->done);
        guard_leave(&g);
    }
    la_sparse_tile_cache_free(&sc->tiles);
    free(sc);
    ctx->device_scratch = NULL;
    ctx->device_release = NULL;
}

/* ---- can the kernels run this problem? ---- */

/* `align`: the bytes every row must start on. q/k/v load in 16-byte pieces
 * (cp.async), out stores pairs of elements, lse single floats. */
static la_status check_operand(const la_attn_operand *o, const char *name, int device, int64_t align) {
    if (!o->data) return LA_OK; /* absent, or an empty tensor */
    int64_t esz = (int64_t)la_dtype_size(o->dtype);
    if ((uintptr_t)o->data % (uintptr_t)align || (o->batch_stride * esz) % align || (o->token_stride * esz) % align ||
        (o->head_stride * esz) % align)
        return la_fail(LA_ERR_UNSUPPORTED,
                       "%s: the CUDA backend needs every row %lld-byte aligned (data pointer and batch, token and "
                       "head strides)", name, (long long)align);
    struct cudaPointerAttributes at;
    cudaError_t e = cudaPointerGetAttributes(&at, o->data);
    if (e != cudaSuccess) return cuda_fail(e, "cudaPointerGetAttributes");
    if (at.type == cudaMemoryTypeUnregistered || at.type == cudaMemoryTypeHost)
        return la_fail(LA_ERR_DEVICE, "%s points to host memory but its tensor says CUDA device %d", name, device);
    if (at.type == cudaMemoryTypeDevice && at.device != device)
        return la_fail(LA_ERR_DEVICE, "%s lives on CUDA device %d but its tensor says device %d", name, at.device,
                       device);
    return LA_OK;
}

/* The forward's and backward's checks: 16-bit q/k/v, head dim, grid limits. */
static la_status check_qkv16(const la_attn_problem *p, const char *what) {
    if (p->q.dtype != LA_BF16 && p->q.dtype != LA_F16)
        return la_fail(LA_ERR_UNSUPPORTED, "q/k/v are %s; the CUDA %s takes bf16 or f16", la_dtype_name(p->q.dtype),
                       what);
    if (p->D > LA_CUDA_MAX_HEAD_DIM)
        return la_fail(LA_ERR_UNSUPPORTED, "head_dim %lld: the CUDA %s takes multiples of 8 up to %d",
                       (long long)p->D, what, LA_CUDA_MAX_HEAD_DIM);
    if (p->H > 65535 || p->num_seqs > 65535)
        return la_fail(LA_ERR_UNSUPPORTED, "%lld heads and %lld sequences: the CUDA %s takes up to 65535 of each",
                       (long long)p->H, (long long)p->num_seqs, what);
    return LA_OK;
}

/* Rows of a block index: sequences x heads x query blocks. */
static int64_t sparse_rows(const la_attn_sparse_problem *sp) {
    return sp->fwd.a.num_seqs * sp->fwd.a.H * sp->index.q_blocks;
}

/* Whether an index has extra key columns (then the kernels take its tile
 * lists, cuda/attention/sparse_tiles.h). */
static bool sparse_has_cols(const la_block_list *x, int64_t rows) { return x->col_offsets && x->col_offsets[rows] > 0; }

/* 2 elements: the kernels store pairs; 16 bytes: they load rows by cp.async. */
static int64_t pair_align(const la_attn_operand *o) { return 2 * (int64_t)la_dtype_size(o->dtype); }

static la_status cuda_supports(const la_attn_problem *p) {
    if (!la_cuda_available()) return LA_ERR_DEVICE;
    const int dev = p->device.index;
    la_status s;
    if (p->op == LA_ATTN_MERGE) {
        const la_attn_merge_problem *mp = (const la_attn_merge_problem *)p;
        for (int i = 0; i < mp->n_parts; i++) {
            la_attn_operand o, l;
            la_attn_merge_part(mp, i, &o, &l);
            if ((s = check_operand(&o, "out_parts[i]", dev, (int64_t)la_dtype_size(o.dtype))) ||
                (s = check_operand(&l, "lse_parts[i]", dev, 4)))
                return s;
        }
        if ((s = check_operand(&mp->out, "out", dev, (int64_t)la_dtype_size(mp->out.dtype))) ||
            (s = check_operand(&mp->lse, "lse", dev, 4)))
            return s;
        return LA_OK;
    }
    if (p->op == LA_ATTN_KV_APPEND) {
        const la_attn_kv_append_problem *ap = (const la_attn_kv_append_problem *)p;
        if ((s = check_operand(&p->k, "k_new", dev, (int64_t)la_dtype_size(p->k.dtype))) ||
            (s = check_operand(&p->v, "v_new", dev, (int64_t)la_dtype_size(p->v.dtype))) ||
            (s = check_operand(&ap->k_cache, "k_cache", dev, (int64_t)la_dtype_size(ap->k_cache.dtype))) ||
            (s = check_operand(&ap->v_cache, "v_cache", dev, (int64_t)la_dtype_size(ap->v_cache.dtype))))
            return s;
        return LA_OK;
    }
    if (p->op == LA_ATTN_FORWARD || p->op == LA_ATTN_SPARSE_FORWARD) {
        /* the sparse problem starts with the forward's */
        const la_attn_forward_problem *f = (const la_attn_forward_problem *)p;
        if ((s = check_qkv16(p, p->op == LA_ATTN_FORWARD ? "forward" : "block-sparse forward"))) return s;
        if ((s = check_operand(&p->q, "q", dev, 16)) || (s = check_operand(&p->k, "k", dev, 16)) ||
            (s = check_operand(&p->v, "v", dev, 16)) || (s = check_operand(&f->out, "out", dev, pair_align(&f->out))) ||
            (s = check_operand(&f->lse, "lse", dev, 4)))
            return s;
        return LA_OK;
    }
    if (p->op == LA_ATTN_BACKWARD || p->op == LA_ATTN_SPARSE_BACKWARD) {
        /* the sparse problem starts with the backward's */
        const la_attn_backward_problem *bp = (const la_attn_backward_problem *)p;
        if ((s = check_qkv16(p, p->op == LA_ATTN_BACKWARD ? "backward" : "block-sparse backward"))) return s;
        /* dout is read as 16-bit tiles (an f32 dout is converted first); out elementwise */
        const int64_t dout_align = bp->dout.dtype == LA_F32 ? 4 : 16;
        if ((s = check_operand(&p->q, "q", dev, 16)) || (s = check_operand(&p->k, "k", dev, 16)) ||
            (s = check_operand(&p->v, "v", dev, 16)) ||
            (s = check_operand(&bp->fwd.out, "out", dev, (int64_t)la_dtype_size(bp->fwd.out.dtype))) ||
            (s = check_operand(&bp->dout, "dout", dev, dout_align)) ||
            (s = check_operand(&bp->fwd.lse, "lse", dev, 4)) ||
            (s = check_operand(&bp->dq, "dq", dev, pair_align(&bp->dq))) ||
            (s = check_operand(&bp->dk, "dk", dev, pair_align(&bp->dk))) ||
            (s = check_operand(&bp->dv, "dv", dev, pair_align(&bp->dv))))
            return s;
        return LA_OK;
    }
    /* decode: f32 q, a 16-bit cache */
    const la_attn_decode_problem *dp = (const la_attn_decode_problem *)p;
    if (p->k.dtype != LA_BF16 && p->k.dtype != LA_F16)
        return la_fail(LA_ERR_UNSUPPORTED, "the K/V cache is %s; the CUDA decode takes bf16 or f16",
                       la_dtype_name(p->k.dtype));
    if (p->D > LA_CUDA_MAX_HEAD_DIM)
        return la_fail(LA_ERR_UNSUPPORTED, "head_dim %lld: the CUDA decode takes multiples of 8 up to %d",
                       (long long)p->D, LA_CUDA_MAX_HEAD_DIM);
    const int64_t rows = p->H / p->Hkv * p->Lq, row_groups = (rows + 63) / 64;
    if (p->num_seqs > 65535 || p->Hkv * row_groups > 65535)
        return la_fail(LA_ERR_UNSUPPORTED, "batch %lld, %lld K/V heads, %lld query rows per head: the CUDA decode "
                       "takes a batch up to 65535 and K/V heads x ceil(rows / 64) up to 65535",
                       (long long)p->num_seqs, (long long)p->Hkv, (long long)rows);
    if ((s = check_operand(&p->q, "q", dev, 4)) || (s = check_operand(&p->k, "k", dev, 16)) ||
        (s = check_operand(&p->v, "v", dev, 16)) || (s = check_operand(&dp->fwd.out, "out", dev, 4)) ||
        (s = check_operand(&dp->fwd.lse, "lse", dev, 4)))
        return s;
    return LA_OK;
}

/* Device workspace, in this order, each piece rounded to 64 bytes:
 *   every call: alibi slopes [H] f32; varlen cu_q and cu_k [num_seqs + 1]
 *   backward:   delta and lse * log2(e) [rows][H] f32, then (dout f32) a
 *               16-bit dout [rows][H][D], then (the Hopper kernel's atomic
 *               dQ) an f32 dQ [rows][H][D] and the pieces of its last
 *               partial wave (la_cuda_attention_backward_tail_workspace)
 *   decode:     seqlens [B] and the block table [B][blocks_per_seq] int32,
 *               then the split partials (la_cuda_decode_plan). */
static size_t round64(size_t n) { return (n + 63) & ~(size_t)63; }

/* Query tokens of a backward call, in all. */
static int64_t backward_rows(const la_attn_problem *p) { return p->cu_q ? p->cu_q[p->num_seqs] : p->num_seqs * p->Lq; }

static int sm_count(int device) {
    int n = 0;
    if (cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) n = 0;
    return n;
}

/* The Hopper backward's pieces of its last partial wave, in bytes (0: none) */
static size_t backward_tail_bytes(const la_attn_problem *p, int deterministic) {
    const la_score_rule *r = &p->rule;
    const int even = !r->causal && r->window_left < 0 && r->window_right < 0;
    return la_cuda_attention_backward_tail_workspace(p->D, deterministic, p->cu_q != NULL, even, p->Lq, p->Lk, p->H,
                                                     p->Hkv, p->num_seqs, sm_count(p->device.index));
}

/* The decode call's arguments with host pointers for the arrays still to
 * be copied, and its split planned. */
static la_cuda_decode_args decode_args(const la_attn_decode_problem *dp, size_t *part_floats) {
    const la_attn_problem *p = &dp->fwd.a;
    const la_attn_forward_problem *f = &dp->fwd;
    la_cuda_decode_args a = {
        .q = (const float *)p->q.data, .k = p->k.data, .v = p->v.data, .out = (float *)f->out.data,
        .lse = (float *)f->lse.data,
        .q_bs = p->q.batch_stride, .q_ts = p->q.token_stride, .q_hs = p->q.head_stride,
        .k_bs = p->k.batch_stride, .k_ts = p->k.token_stride, .k_hs = p->k.head_stride,
        .v_bs = p->v.batch_stride, .v_ts = p->v.token_stride, .v_hs = p->v.head_stride,
        .o_bs = f->out.batch_stride, .o_ts = f->out.token_stride, .o_hs = f->out.head_stride,
        .l_bs = f->lse.batch_stride, .l_ts = f->lse.token_stride, .l_hs = f->lse.head_stride,
        .seqlens = dp->kv.seqlens_k, .block_table = dp->kv.block_table, .blocks_per_seq = dp->kv.blocks_per_seq,
        .block_size = dp->kv.block_size, .B = p->num_seqs, .H = p->H, .Hkv = p->Hkv, .D = p->D, .Lq = p->Lq,
        .Lk = p->Lk, .rule = p->rule, .f16 = p->k.dtype == LA_F16,
    };
    int64_t max_len = 0;
    for (int64_t b = 0; b < p->num_seqs; b++) {
        int64_t n = la_kv_len(dp, b);
        max_len = n > max_len ? n : max_len;
    }
    *part_floats = la_cuda_decode_plan(&a, max_len, sm_count(p->device.index));
    return a;
}

static la_status cuda_workspace(const la_attn_problem *p, size_t *bytes) {
    size_t n = 0;
    if (p->rule.alibi_slopes) n += round64(sizeof(float) * (size_t)p->H);
    if (p->cu_q) n += 2 * round64(sizeof(int32_t) * (size_t)(p->num_seqs + 1));
    if (p->op == LA_ATTN_BACKWARD || p->op == LA_ATTN_SPARSE_BACKWARD) {
        const la_attn_backward_problem *bp = (const la_attn_backward_problem *)p;
        const size_t rh = (size_t)backward_rows(p) * (size_t)p->H;
        n += 2 * round64(sizeof(float) * rh);
        if (bp->dout.dtype == LA_F32) n += round64(2 * rh * (size_t)p->D);
        if (p->op == LA_ATTN_BACKWARD && la_cuda_attention_backward_dq_acc(p->D, bp->deterministic)) {
            n += round64(4 * rh * (size_t)p->D);
            n += round64(backward_tail_bytes(p, bp->deterministic));
        }
        if (p->op == LA_ATTN_SPARSE_BACKWARD) { /* both tile lists */
            const la_block_list *x = &((const la_attn_sparse_backward_problem *)p)->index;
            const size_t tiles = sizeof(la_sparse_tile) * (size_t)la_sparse_tiles_bound(x, p);
            const int64_t buckets = p->num_seqs * p->Hkv * ((p->Lk + LA_SPARSE_TILE - 1) / LA_SPARSE_TILE);
            n += round64(sizeof(int64_t) * (size_t)(p->num_seqs * p->H * x->q_blocks + 1)) + 2 * round64(tiles) +
                 round64(sizeof(int64_t) * (size_t)(buckets + 1));
        }
    } else if (p->op == LA_ATTN_FORWARD) {
        n += round64(la_cuda_attention_forward_workspace(&p->rule, p->cu_q != NULL, p->D, sm_count(p->device.index)));
    } else if (p->op == LA_ATTN_SPARSE_FORWARD) {
        const la_attn_sparse_problem *sp = (const la_attn_sparse_problem *)p;
        const int64_t rows = sparse_rows(sp);
        n += round64(sizeof(int64_t) * (size_t)(rows + 1));
        if (sparse_has_cols(&sp->index, rows))
            n += round64(sizeof(la_sparse_tile) * (size_t)la_sparse_tiles_bound(&sp->index, p));
        else n += round64(sizeof(int32_t) * (size_t)sp->index.offsets[rows]);
    } else if (p->op == LA_ATTN_MERGE) {
        n += round64(2 * sizeof(la_attn_operand) * (size_t)((const la_attn_merge_problem *)p)->n_parts);
    } else if (p->op == LA_ATTN_KV_APPEND) {
        n += round64(sizeof(int64_t) * (size_t)(p->num_seqs * p->Lq));
    } else if (p->op == LA_ATTN_DECODE) {
        const la_attn_decode_problem *dp = (const la_attn_decode_problem *)p;
        size_t part = 0;
        decode_args(dp, &part);
        if (dp->kv.seqlens_k) n += round64(sizeof(int32_t) * (size_t)p->num_seqs);
        if (dp->kv.block_table) n += round64(sizeof(int32_t) * (size_t)(p->num_seqs * dp->kv.blocks_per_seq));
        n += round64(sizeof(float) * part) + round64(sizeof(float) * part * (size_t)p->D);
    }
    *bytes = n;
    return LA_OK;
}

static la_status cuda_workspace_alloc(la_context *ctx, const la_attn_problem *p, size_t bytes, void **out) {
    *out = NULL;
    int dev = p->device.index;
    cuda_scratch *sc = ctx->device_scratch;
    if (sc && sc->device == dev && sc->bytes >= bytes) {
        *out = sc->mem;
        return LA_OK;
    }
    if (sc && sc->device != dev) scratch_release(ctx), sc = NULL;
    device_guard g;
    la_status s = guard_enter(dev, &g);
    if (s) return s;
    if (!sc) {
        sc = calloc(1, sizeof *sc);
        if (!sc) {
            guard_leave(&g);
            return la_fail(LA_ERR_NOMEM, "could not allocate the CUDA scratch record");
        }
        sc->device = dev;
        cudaError_t e = cudaEventCreateWithFlags(&sc->done, cudaEventDisableTiming);
        if (e != cudaSuccess) {
            free(sc);
            guard_leave(&g);
            return cuda_fail(e, "cudaEventCreateWithFlags");
        }
        ctx->device_scratch = sc;
        ctx->device_release = scratch_release;
    }
    cudaError_t e = cudaEventSynchronize(sc->done); /* the old memory may still be read */
    if (e == cudaSuccess && sc->mem) e = cudaFree(sc->mem);
    sc->mem = NULL;
    sc->bytes = 0;
    size_t want = round64(bytes > 256 ? bytes : 256);
    if (e == cudaSuccess) e = cudaMalloc(&sc->mem, want);
    guard_leave(&g);
    if (e != cudaSuccess) return cuda_fail(e, "cudaMalloc of the device workspace");
    sc->bytes = want;
    *out = sc->mem;
    return LA_OK;
}

/* Start a call on the context's stream: make the device current and wait,
 * on the device, for the context's previous work (it may have run on
 * another stream and may still read the workspace). */
static la_status call_begin(la_context *ctx, int device, device_guard *g) {
    la_status s = guard_enter(device, g);
    if (s) return s;
    cuda_scratch *sc = ctx->device_scratch;
    cudaError_t e = sc ? cudaStreamWaitEvent((cudaStream_t)ctx->cuda_stream, sc->done, 0) : cudaSuccess;
    if (e != cudaSuccess) {
        guard_leave(g);
        return cuda_fail(e, "cudaStreamWaitEvent");
    }
    return LA_OK;
}

/* End it: record the context's event after the call's work (s is the
 * call's status so far) and restore the caller's device. */
static la_status call_end(la_context *ctx, device_guard *g, la_status s) {
    cuda_scratch *sc = ctx->device_scratch;
    cudaError_t e;
    if (!s && sc && (e = cudaEventRecord(sc->done, (cudaStream_t)ctx->cuda_stream)) != cudaSuccess)
        s = cuda_fail(e, "cudaEventRecord");
    guard_leave(g);
    return s;
}

/* Copy n bytes of a host array into the workspace at *w on the stream and
 * advance *w; returns the device copy (NULL for a NULL array). */
static const void *stage(char **w, const void *host, size_t n, cudaStream_t stream, cudaError_t *e) {
    if (!host || *e != cudaSuccess) return NULL;
    void *dst = *w;
    *e = cudaMemcpyAsync(dst, host, n, cudaMemcpyHostToDevice, stream);
    *w += round64(n);
    return dst;
}

/* The arrays every call may carry: alibi slopes, cu_seqlens. */
static void stage_common(const la_attn_problem *p, char **w, cudaStream_t stream, cudaError_t *e, la_score_rule *rule,
                         const int32_t **cu_q, const int32_t **cu_k) {
    *rule = p->rule;
    rule->alibi_slopes = stage(w, p->rule.alibi_slopes, sizeof(float) * (size_t)p->H, stream, e);
    const size_t n = sizeof(int32_t) * (size_t)(p->num_seqs + 1);
    *cu_q = stage(w, p->cu_q, n, stream, e);
    *cu_k = stage(w, p->cu_k, n, stream, e);
}

/* The forward's arguments, the host arrays not yet staged. */
static la_cuda_fwd_args fwd_args(const la_attn_forward_problem *f) {
    const la_attn_problem *p = &f->a;
    return (la_cuda_fwd_args){
        .q = p->q.data, .k = p->k.data, .v = p->v.data, .out = f->out.data, .lse = (float *)f->lse.data,
        .q_bs = p->q.batch_stride, .q_ts = p->q.token_stride, .q_hs = p->q.head_stride,
        .k_bs = p->k.batch_stride, .k_ts = p->k.token_stride, .k_hs = p->k.head_stride,
        .v_bs = p->v.batch_stride, .v_ts = p->v.token_stride, .v_hs = p->v.head_stride,
        .o_bs = f->out.batch_stride, .o_ts = f->out.token_stride, .o_hs = f->out.head_stride,
        .l_bs = f->lse.batch_stride, .l_ts = f->lse.token_stride, .l_hs = f->lse.head_stride,
        .num_seqs = p->num_seqs, .H = p->H, .Hkv = p->Hkv, .D = p->D, .Lq = p->Lq, .Lk = p->Lk,
        .f16 = p->q.dtype == LA_F16, .out_f32 = f->out.dtype == LA_F32,
    };
}

static la_status cuda_forward(la_context *ctx, const la_attn_forward_problem *f, void *ws) {
    const la_attn_problem *p = &f->a;
    cudaStream_t stream = (cudaStream_t)ctx->cuda_stream;
    device_guard g;
    la_status s = call_begin(ctx, p->device.index, &g);
    if (s) return s;
    la_cuda_fwd_args a = fwd_args(f);
    char *w = ws;
    cudaError_t e = cudaSuccess;
    stage_common(p, &w, stream, &e, &a.rule, &a.cu_q, &a.cu_k);
    if (la_cuda_attention_forward_workspace(&p->rule, p->cu_q != NULL, p->D, sm_count(p->device.index)))
        a.split_ws = w; /* the rest: the key split's pieces (cuda_workspace) */
    if (e != cudaSuccess) s = cuda_fail(e, "copying the call's host arrays to the device");
    else s = la_cuda_attention_forward_launch(&a, stream);
    return call_end(ctx, &g, s);
}

/* The index goes to the device with the call's other host arrays: the op
 * layer has checked it on the host, so the kernel reads it unchecked. */
static la_status cuda_sparse_forward(la_context *ctx, const la_attn_sparse_problem *sp, void *ws) {
    const la_attn_problem *p = &sp->fwd.a;
    cudaStream_t stream = (cudaStream_t)ctx->cuda_stream;
    device_guard g;
    la_status s = call_begin(ctx, p->device.index, &g);
    if (s) return s;
    la_cuda_sparse_fwd_args a = {.f = fwd_args(&sp->fwd), .block_size = sp->index.block_size,
                                 .q_blocks = sp->index.q_blocks};
    char *w = ws;
    cudaError_t e = cudaSuccess;
    stage_common(p, &w, stream, &e, &a.f.rule, &a.f.cu_q, &a.f.cu_k);
    const int64_t rows = sparse_rows(sp), nnz = sp->index.offsets[rows];
    la_sparse_tile_lists t = {0};
    if (sparse_has_cols(&sp->index, rows)) { /* the tile lists instead of the index */
        if (!(s = la_sparse_tiles_build(&sp->index, p, false, &((cuda_scratch *)ctx->device_scratch)->tiles, &t))) {
            a.tile_off = stage(&w, t.q_off, sizeof(int64_t) * (size_t)(rows + 1), stream, &e);
            a.tiles = stage(&w, t.q_tiles, sizeof(la_sparse_tile) * (size_t)t.q_off[rows], stream, &e);
        }
    } else {
        a.offsets = stage(&w, sp->index.offsets, sizeof(int64_t) * (size_t)(rows + 1), stream, &e);
        a.key_blocks = nnz ? stage(&w, sp->index.key_blocks, sizeof(int32_t) * (size_t)nnz, stream, &e) : NULL;
    }
    if (!s && e != cudaSuccess) s = cuda_fail(e, "copying the call's host arrays (and the block index) to the device");
    else if (!s) s = la_cuda_sparse_forward_launch(&a, stream);
    return call_end(ctx, &g, s);
}

/* The block index is read on the host (the op layer's checks, then the
 * copy above): device memory there is refused before anything reads it. */
static la_status cuda_host_readable(const void *ptr, const char *name) {
    struct cudaPointerAttributes at;
    cudaError_t e = cudaPointerGetAttributes(&at, ptr);
    if (e != cudaSuccess) return cuda_fail(e, "cudaPointerGetAttributes");
    if (at.type == cudaMemoryTypeDevice)
        return la_fail(LA_ERR_DEVICE, "%s points to CUDA device %d memory; the block index must be host memory (the "
                       "CUDA backend copies it to the device)", name, at.device);
    return LA_OK;
}

/* The backward's arguments with its workspace arrays placed (from *w on)
 * and the call's host arrays staged. */
static la_cuda_bwd_args bwd_args(const la_attn_backward_problem *bp, char **w, cudaStream_t stream, cudaError_t *e) {
    const la_attn_problem *p = &bp->fwd.a;
    const la_attn_forward_problem *f = &bp->fwd;
    la_cuda_bwd_args a = {
        .q = p->q.data, .k = p->k.data, .v = p->v.data, .out = f->out.data, .dout = bp->dout.data,
        .lse = (const float *)f->lse.data, .dq = bp->dq.data, .dk = bp->dk.data, .dv = bp->dv.data,
        .q_bs = p->q.batch_stride, .q_ts = p->q.token_stride, .q_hs = p->q.head_stride,
        .k_bs = p->k.batch_stride, .k_ts = p->k.token_stride, .k_hs = p->k.head_stride,
        .v_bs = p->v.batch_stride, .v_ts = p->v.token_stride, .v_hs = p->v.head_stride,
        .o_bs = f->out.batch_stride, .o_ts = f->out.token_stride, .o_hs = f->out.head_stride,
        .do_bs = bp->dout.batch_stride, .do_ts = bp->dout.token_stride, .do_hs = bp->dout.head_stride,
        .l_bs = f->lse.batch_stride, .l_ts = f->lse.token_stride, .l_hs = f->lse.head_stride,
        .dq_bs = bp->dq.batch_stride, .dq_ts = bp->dq.token_stride, .dq_hs = bp->dq.head_stride,
        .dk_bs = bp->dk.batch_stride, .dk_ts = bp->dk.token_stride, .dk_hs = bp->dk.head_stride,
        .dv_bs = bp->dv.batch_stride, .dv_ts = bp->dv.token_stride, .dv_hs = bp->dv.head_stride,
        .num_seqs = p->num_seqs, .H = p->H, .Hkv = p->Hkv, .D = p->D, .Lq = p->Lq, .Lk = p->Lk,
        .rows = backward_rows(p), .f16 = p->q.dtype == LA_F16, .out_f32 = f->out.dtype == LA_F32,
        .dout_f32 = bp->dout.dtype == LA_F32, .dq_f32 = bp->dq.dtype == LA_F32, .dk_f32 = bp->dk.dtype == LA_F32,
        .dv_f32 = bp->dv.dtype == LA_F32,
    };
    stage_common(p, w, stream, e, &a.rule, &a.cu_q, &a.cu_k);
    const size_t rh = (size_t)a.rows * (size_t)p->H;
    a.delta = (float *)*w, *w += round64(sizeof(float) * rh);
    a.lse2 = (float *)*w, *w += round64(sizeof(float) * rh);
    if (a.dout_f32) a.dout16 = *w, *w += round64(2 * rh * (size_t)p->D);
    a.deterministic = bp->deterministic;
    return a;
}

static la_status cuda_backward(la_context *ctx, const la_attn_backward_problem *bp, void *ws) {
    const la_attn_problem *p = &bp->fwd.a;
    cudaStream_t stream = (cudaStream_t)ctx->cuda_stream;
    device_guard g;
    la_status s = call_begin(ctx, p->device.index, &g);
    if (s) return s;
    char *w = ws;
    cudaError_t e = cudaSuccess;
    la_cuda_bwd_args a = bwd_args(bp, &w, stream, &e);
    if (la_cuda_attention_backward_dq_acc(p->D, bp->deterministic)) {
        a.dq_acc = (float *)w;
        w += round64(4 * (size_t)a.rows * (size_t)p->H * (size_t)p->D);
        /* the rest: the last wave's pieces (cuda_workspace) */
        if (backward_tail_bytes(p, bp->deterministic)) a.tail_ws = w;
    }
    if (e != cudaSuccess) s = cuda_fail(e, "copying the call's host arrays to the device");
    else s = la_cuda_attention_backward_launch(&a, stream);
    return call_end(ctx, &g, s);
}

/* The dense backward's passes over the index's tile lists, built here on
 * the host from the checked index (both: by query block for dQ, by key tile
 * for dK and dV) and copied with the call's other host arrays. */
static la_status cuda_sparse_backward(la_context *ctx, const la_attn_sparse_backward_problem *sp, void *ws) {
    const la_attn_problem *p = &sp->bwd.fwd.a;
    const int64_t rows = sp->index.block_size < p->Lq ? sp->index.block_size : p->Lq; /* of a query block */
    if (sp->index.q_blocks * ((rows + 63) / 64) > 0x7fffffff)
        return la_fail(LA_ERR_UNSUPPORTED, "%lld query blocks of %lld rows: the CUDA block-sparse backward takes up "
                       "to 2^31 - 1 pieces of 64 rows per head", (long long)sp->index.q_blocks,
                       (long long)sp->index.block_size);
    /* the cache is rewritten only after the previous call's copies are
     * done: pageable cudaMemcpyAsync returns once the source is read */
    la_sparse_tile_lists t;
    la_status s = la_sparse_tiles_build(&sp->index, p, true, &((cuda_scratch *)ctx->device_scratch)->tiles, &t);
    if (s) return s;
    cudaStream_t stream = (cudaStream_t)ctx->cuda_stream;
    device_guard g;
    if ((s = call_begin(ctx, p->device.index, &g))) return s;
    char *w = ws;
    cudaError_t e = cudaSuccess;
    la_cuda_bwd_args a = bwd_args(&sp->bwd, &w, stream, &e);
    const int64_t buckets = p->num_seqs * p->Hkv * t.k_tiles_per_seq, n = t.q_off[t.rows];
    a.q_off = stage(&w, t.q_off, sizeof(int64_t) * (size_t)(t.rows + 1), stream, &e);
    a.q_tiles = stage(&w, t.q_tiles, sizeof(la_sparse_tile) * (size_t)n, stream, &e);
    a.k_off = stage(&w, t.k_off, sizeof(int64_t) * (size_t)(buckets + 1), stream, &e);
    a.k_tiles = stage(&w, t.k_tiles, sizeof(la_sparse_tile) * (size_t)n, stream, &e);
    a.block_size = sp->index.block_size, a.q_blocks = sp->index.q_blocks, a.k_tiles_per_seq = t.k_tiles_per_seq;
    if (e != cudaSuccess) s = cuda_fail(e, "copying the call's host arrays (and the tile lists) to the device");
    else s = la_cuda_attention_backward_launch(&a, stream);
    return call_end(ctx, &g, s);
}

static la_status cuda_decode(la_context *ctx, const la_attn_decode_problem *dp, void *ws) {
    const la_attn_problem *p = &dp->fwd.a;
    cudaStream_t stream = (cudaStream_t)ctx->cuda_stream;
    device_guard g;
    la_status s = call_begin(ctx, p->device.index, &g);
    if (s) return s;
    size_t part = 0;
    la_cuda_decode_args a = decode_args(dp, &part);
    char *w = ws;
    cudaError_t e = cudaSuccess;
    const int32_t *cu_q, *cu_k;
    stage_common(p, &w, stream, &e, &a.rule, &cu_q, &cu_k);
    if (dp->kv.seqlens_k && p->num_seqs <= LA_CUDA_DECODE_INLINE_LENS) { /* in the arguments: no copy */
        memcpy(a.lens, dp->kv.seqlens_k, sizeof(int32_t) * (size_t)p->num_seqs);
        a.lens_inline = 1;
        a.seqlens = NULL;
        w += round64(sizeof(int32_t) * (size_t)p->num_seqs); /* the workspace's place for them stays unused */
    } else {
        a.seqlens = stage(&w, dp->kv.seqlens_k, sizeof(int32_t) * (size_t)p->num_seqs, stream, &e);
    }
    a.block_table = stage(&w, dp->kv.block_table, sizeof(int32_t) * (size_t)(p->num_seqs * dp->kv.blocks_per_seq),
                          stream, &e);
    a.part_lse = (float *)w;
    a.part_out = (float *)(w + round64(sizeof(float) * part));
    if (e != cudaSuccess) s = cuda_fail(e, "copying the call's host arrays to the device");
    else s = la_cuda_attention_decode_launch(&a, stream);
    return call_end(ctx, &g, s);
}

static la_status cuda_merge(la_context *ctx, const la_attn_merge_problem *mp, void *ws) {
    const int n = mp->n_parts;
    la_attn_operand *host = malloc(2 * sizeof(la_attn_operand) * (size_t)n);
    if (!host) return la_fail(LA_ERR_NOMEM, "no memory for %d parts' operands", n);
    for (int i = 0; i < n; i++) la_attn_merge_part(mp, i, &host[i], &host[n + i]);
    cudaStream_t stream = (cudaStream_t)ctx->cuda_stream;
    device_guard g;
    la_status s = call_begin(ctx, mp->a.device.index, &g);
    if (!s) {
        char *w = ws;
        cudaError_t e = cudaSuccess;
        const la_attn_operand *parts = stage(&w, host, 2 * sizeof(la_attn_operand) * (size_t)n, stream, &e);
        if (e != cudaSuccess) s = cuda_fail(e, "copying the parts' operands to the device");
        else s = la_cuda_attention_merge_launch(mp, parts, stream);
        s = call_end(ctx, &g, s);
    }
    free(host); /* staged: cudaMemcpyAsync from pageable memory copies before it returns */
    return s;
}

static la_status cuda_kv_append(la_context *ctx, const la_attn_kv_append_problem *ap, void *ws) {
    const la_attn_problem *p = &ap->a;
    cudaStream_t stream = (cudaStream_t)ctx->cuda_stream;
    device_guard g;
    la_status s = call_begin(ctx, p->device.index, &g);
    if (s) return s;
    char *w = ws;
    cudaError_t e = cudaSuccess;
    const int64_t *dst = stage(&w, ap->dst_rows, sizeof(int64_t) * (size_t)(p->num_seqs * p->Lq), stream, &e);
    if (e != cudaSuccess) s = cuda_fail(e, "copying the rows' destinations to the device");
    else s = la_cuda_kv_append_launch(ap, dst, stream);
    return call_end(ctx, &g, s);
}

static la_status cuda_mem_alloc(int index, size_t bytes, void **out) {
    device_guard g;
    la_status s = guard_enter(index, &g);
    if (s) return s;
    cudaError_t e = cudaMalloc(out, bytes); /* 256-byte aligned */
    guard_leave(&g);
    if (e != cudaSuccess) *out = NULL;
    return e == cudaSuccess ? LA_OK : cuda_fail(e, "cudaMalloc");
}

static la_status cuda_mem_free(int index, void *ptr) {
    device_guard g;
    la_status s = guard_enter(index, &g);
    if (s) return s;
    cudaError_t e = cudaFree(ptr);
    guard_leave(&g);
    return e == cudaSuccess ? LA_OK : cuda_fail(e, "cudaFree");
}

static la_status cuda_mem_copy(int index, void *dst, const void *src, size_t bytes) {
    device_guard g;
    la_status s = guard_enter(index, &g);
    if (s) return s;
    cudaError_t e = cudaMemcpy(dst, src, bytes, cudaMemcpyDefault); /* unified addressing tells the direction */
    if (e == cudaSuccess) e = cudaStreamSynchronize(0); /* a device-to-device cudaMemcpy may return before it is done */
    guard_leave(&g);
    return e == cudaSuccess ? LA_OK : cuda_fail(e, "cudaMemcpy");
}

static la_status cuda_synchronize(la_context *ctx) {
    const cuda_scratch *sc = ctx->device_scratch;
    device_guard g;
    int dev = 0;
    if (!sc && cudaGetDevice(&dev) != cudaSuccess) return LA_OK; /* no call ran, nothing to wait for */
    la_status s = guard_enter(sc ? sc->device : dev, &g);
    if (s) return s;
    cudaError_t e = cudaStreamSynchronize((cudaStream_t)ctx->cuda_stream);
    guard_leave(&g);
    return e == cudaSuccess ? LA_OK : cuda_fail(e, "the context's GPU work (cudaStreamSynchronize)");
}

const la_backend la_cuda_backend = {
    .name = "cuda",
    .device = LA_DEVICE_CUDA,
    .supports = cuda_supports,
    .workspace = cuda_workspace,
    .workspace_alloc = cuda_workspace_alloc,
    .forward = cuda_forward,
    .backward = cuda_backward,
    .decode = cuda_decode,
    .merge = cuda_merge,
    .kv_append = cuda_kv_append,
    .sparse_forward = cuda_sparse_forward,
    .sparse_backward = cuda_sparse_backward,
    .host_readable = cuda_host_readable,
    .mem_alloc = cuda_mem_alloc,
    .mem_free = cuda_mem_free,
    .mem_copy = cuda_mem_copy,
    .synchronize = cuda_synchronize,
};
