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
 * Host arrays in the API (cu_seqlens_q/k, alibi_slopes) are read on the host
 * by the op layer's checks, then copied into the device workspace on the
 * call's stream (cudaMemcpyAsync from pageable memory stages them before it
 * returns, so the caller may free them when the call returns). Tensors must
 * be device memory (or managed memory) of the GPU their device.index names:
 * cudaPointerGetAttributes catches ordinary host memory (LA_ERR_DEVICE);
 * host memory registered with CUDA or mapped into the device's address
 * space passes this check, as it is valid for the kernels to read. */
#include "cuda/cuda_backend.h"

#include "cuda/attention/forward.h"

#include <cuda_runtime_api.h>
#include <stdlib.h>

/* The context's device scratch (ctx->device_scratch). `done` is recorded
 * after each call's work, so a regrow or a call on another stream waits for
 * the kernels that may still read the old memory. */
typedef struct {
    void *mem;
    size_t bytes;
    int device;
    cudaEvent_t done;
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

static la_status cuda_supports(const la_attn_problem *p) {
    if (p->op != LA_ATTN_FORWARD)
        return la_fail(LA_ERR_UNSUPPORTED, "the CUDA backend runs the attention forward only (no %s yet)",
                       p->op == LA_ATTN_BACKWARD ? "backward" : p->op == LA_ATTN_DECODE ? "decode" : "merge");
    if (!la_cuda_available()) return LA_ERR_DEVICE;
    if (p->q.dtype != LA_BF16 && p->q.dtype != LA_F16)
        return la_fail(LA_ERR_UNSUPPORTED, "q/k/v are %s; the CUDA forward takes bf16 or f16",
                       la_dtype_name(p->q.dtype));
    if (p->D > LA_CUDA_MAX_HEAD_DIM)
        return la_fail(LA_ERR_UNSUPPORTED, "head_dim %lld: the CUDA forward takes multiples of 8 up to %d",
                       (long long)p->D, LA_CUDA_MAX_HEAD_DIM);
    if (p->H > 65535 || p->num_seqs > 65535)
        return la_fail(LA_ERR_UNSUPPORTED, "%lld heads and %lld sequences: the CUDA forward takes up to 65535 of each",
                       (long long)p->H, (long long)p->num_seqs);
    const la_attn_forward_problem *f = (const la_attn_forward_problem *)p;
    int dev = p->device.index;
    la_status s;
    if ((s = check_operand(&p->q, "q", dev, 16)) || (s = check_operand(&p->k, "k", dev, 16)) ||
        (s = check_operand(&p->v, "v", dev, 16)) ||
        (s = check_operand(&f->out, "out", dev, 2 * (int64_t)la_dtype_size(f->out.dtype))) ||
        (s = check_operand(&f->lse, "lse", dev, 4)))
        return s;
    return LA_OK;
}

/* Device workspace: alibi slopes [H] f32, then cu_q and cu_k [num_seqs + 1]. */
static size_t round64(size_t n) { return (n + 63) & ~(size_t)63; }

static la_status cuda_workspace(const la_attn_problem *p, size_t *bytes) {
    *bytes = 0;
    if (p->rule.alibi_slopes) *bytes += round64(sizeof(float) * (size_t)p->H);
    if (p->cu_q) *bytes += 2 * round64(sizeof(int32_t) * (size_t)(p->num_seqs + 1));
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

static la_status cuda_forward(la_context *ctx, const la_attn_forward_problem *f, void *ws) {
    const la_attn_problem *p = &f->a;
    cuda_scratch *sc = ctx->device_scratch;
    cudaStream_t stream = (cudaStream_t)ctx->cuda_stream;
    device_guard g;
    la_status s = guard_enter(p->device.index, &g);
    if (s) return s;
    la_cuda_fwd_args a = {
        .q = p->q.data, .k = p->k.data, .v = p->v.data, .out = f->out.data, .lse = (float *)f->lse.data,
        .q_bs = p->q.batch_stride, .q_ts = p->q.token_stride, .q_hs = p->q.head_stride,
        .k_bs = p->k.batch_stride, .k_ts = p->k.token_stride, .k_hs = p->k.head_stride,
        .v_bs = p->v.batch_stride, .v_ts = p->v.token_stride, .v_hs = p->v.head_stride,
        .o_bs = f->out.batch_stride, .o_ts = f->out.token_stride, .o_hs = f->out.head_stride,
        .l_bs = f->lse.batch_stride, .l_ts = f->lse.token_stride, .l_hs = f->lse.head_stride,
        .num_seqs = p->num_seqs, .H = p->H, .Hkv = p->Hkv, .D = p->D, .Lq = p->Lq, .Lk = p->Lk,
        .rule = p->rule, .f16 = p->q.dtype == LA_F16, .out_f32 = f->out.dtype == LA_F32,
    };
    char *w = ws;
    cudaError_t e = cudaSuccess;
    if (sc) e = cudaStreamWaitEvent(stream, sc->done, 0); /* a previous call on another stream */
    if (e == cudaSuccess && p->rule.alibi_slopes) {
        size_t n = sizeof(float) * (size_t)p->H;
        e = cudaMemcpyAsync(w, p->rule.alibi_slopes, n, cudaMemcpyHostToDevice, stream);
        a.rule.alibi_slopes = (const float *)w;
        w += round64(n);
    }
    if (e == cudaSuccess && p->cu_q) {
        size_t n = sizeof(int32_t) * (size_t)(p->num_seqs + 1);
        e = cudaMemcpyAsync(w, p->cu_q, n, cudaMemcpyHostToDevice, stream);
        a.cu_q = (const int32_t *)w;
        w += round64(n);
        if (e == cudaSuccess) e = cudaMemcpyAsync(w, p->cu_k, n, cudaMemcpyHostToDevice, stream);
        a.cu_k = (const int32_t *)w;
    }
    if (e != cudaSuccess) {
        guard_leave(&g);
        return cuda_fail(e, "copying the call's host arrays to the device");
    }
    s = la_cuda_attention_forward_launch(&a, stream);
    if (!s && sc && (e = cudaEventRecord(sc->done, stream)) != cudaSuccess) s = cuda_fail(e, "cudaEventRecord");
    guard_leave(&g);
    return s;
}

const la_backend la_cuda_backend = {
    .name = "cuda",
    .device = LA_DEVICE_CUDA,
    .supports = cuda_supports,
    .workspace = cuda_workspace,
    .workspace_alloc = cuda_workspace_alloc,
    .forward = cuda_forward,
};
