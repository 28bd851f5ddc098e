/* longattn: fast, small, measurable attention over long sequences.
 *
 * The one public header. Every function returns a la_status; on failure
 * la_last_error() holds a thread-local message naming the argument at fault.
 * The library never aborts, never prints and never owns caller memory.
 *
 * Conventions (see docs/ARCHITECTURE.md for the reasons):
 *  - Tensors are views: data pointer, dtype, up to 4 dims, strides in
 *    elements, and the device the data lives on.
 *  - Attention inputs are [batch, seq, heads, head_dim] with explicit strides,
 *    so [batch, heads, seq, head_dim] memory works without copies.
 *  - Variable-length batches are packed [total_tokens, heads, head_dim] with
 *    int32 cu_seqlens (num_seqs + 1 offsets).
 *  - Grouped-query attention: q has H heads, k/v have Hkv heads, H % Hkv == 0;
 *    query head h reads K/V head h / (H / Hkv).
 *  - Causal masking with Lq != Lk aligns the last query with the last key.
 *  - Log-sum-exp outputs are f32, natural log, shaped like q without head_dim.
 */
#ifndef LONGATTN_H
#define LONGATTN_H

#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Every public function is exported from the shared library; everything
 * else in it is hidden. */
#if defined(__GNUC__)
#define LA_API __attribute__((visibility("default")))
#else
#define LA_API
#endif

#define LA_VERSION_MAJOR 0
#define LA_VERSION_MINOR 1
#define LA_VERSION_PATCH 0
#define LA_MAX_DIMS 4
#define LA_MAX_HEAD_DIM 512

/* ---------------------------------------------------------------- status */

typedef enum {
    LA_OK = 0,
    LA_ERR_NULL,         /* a required pointer is NULL */
    LA_ERR_SHAPE,        /* sizes disagree, are < 0, are 0 where the call needs > 0, or heads do not divide */
    LA_ERR_DTYPE,        /* dtype not accepted for this argument */
    LA_ERR_STRIDE,       /* strides negative, data misaligned for its dtype, or a tensor's elements overlapping */
    LA_ERR_OVERFLOW,     /* a size, element count or offset does not fit in 64 bits / size_t */
    LA_ERR_UNSUPPORTED,  /* valid request this build or backend cannot run */
    LA_ERR_ARGUMENT,     /* an option value out of range or inconsistent, a plain array misaligned,
                          * or an output sharing memory with another argument */
    LA_ERR_SEQLENS,      /* cu_seqlens / seqlens / block table out of range */
    LA_ERR_NOMEM,        /* allocation failed */
    LA_ERR_WORKSPACE,    /* caller-provided workspace is too small */
    LA_ERR_DEVICE,       /* tensor on a device this call cannot use */
    LA_ERR_IO,           /* file could not be opened or read */
    LA_ERR_FORMAT,       /* file content is malformed */
    LA_STATUS_COUNT
} la_status;

/* Short fixed name of a status ("LA_ERR_SHAPE"). Never NULL. */
LA_API const char *la_status_name(la_status s);
/* Message of the last failing call on this thread ("" after success). */
LA_API const char *la_last_error(void);
/* Record a failure as the calling thread's last error and return s. For
 * libraries built on longattn (liblongattn_model uses it), so that every
 * failure reads the same way through la_last_error. */
LA_API la_status la_set_error(la_status s, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Clear this thread's message; returns LA_OK. */
LA_API la_status la_clear_error(void);

/* Monotonic wall clock in seconds: the one clock every longattn timing uses. */
LA_API double la_clock_seconds(void);

/* ------------------------------------------------------------- tensors */

typedef enum {
    LA_F32 = 0,
    LA_BF16 = 1,
    LA_F16 = 2,
    LA_DTYPE_COUNT
} la_dtype;

/* Name ("f32") and bytes per element (0 if unknown), from the one table of
 * element formats that also describes the ggml weight types below. */
LA_API const char *la_dtype_name(la_dtype t);
LA_API size_t la_dtype_size(la_dtype t);

typedef enum {
    LA_DEVICE_CPU = 0,
    LA_DEVICE_CUDA = 1   /* NVIDIA GPU memory (builds with the CUDA backend) */
} la_device_kind;

typedef struct {
    la_device_kind kind;
    int index;           /* GPU ordinal; 0 for the CPU */
} la_device;

typedef struct {
    void *data;                      /* aligned to the dtype's size; may be NULL when a dim is 0 */
    la_dtype dtype;
    int ndim;                        /* 1..LA_MAX_DIMS */
    int64_t shape[LA_MAX_DIMS];
    int64_t stride[LA_MAX_DIMS];     /* in elements */
    la_device device;
} la_tensor;

/* A contiguous row-major CPU view; unused trailing dims may be passed as 0
 * only via ndim (la_tensor_contiguous(p, LA_F32, 3, (int64_t[]){T, H, D})).
 * ndim outside 1..LA_MAX_DIMS or a NULL shape gives a view that every call
 * refuses (LA_ERR_SHAPE) and la_tensor_numel counts as -1. */
LA_API la_tensor la_tensor_contiguous(void *data, la_dtype dtype, int ndim, const int64_t *shape);
/* Number of elements (0 when a dim is 0), or -1 if the product overflows, a
 * dim is negative, t is NULL or its ndim is outside 1..LA_MAX_DIMS. */
LA_API int64_t la_tensor_numel(const la_tensor *t);

/* ------------------------------------------------------------- context */

/* The CPU instruction sets longattn dispatches on, lowest first. */
typedef enum {
    LA_SIMD_SCALAR = 0,      /* portable C, the compiler's baseline ISA */
    LA_SIMD_AVX2 = 1,        /* AVX2 + FMA + F16C */
    LA_SIMD_AVX512 = 2,      /* AVX-512 F/BW/DQ/VL */
    LA_SIMD_AVX512_BF16 = 3, /* AVX-512 plus AVX512_BF16 dot products */
    LA_SIMD_COUNT
} la_simd;

LA_API const char *la_simd_name(la_simd s);
/* Best level this CPU supports, capped by env LONGATTN_SIMD
 * (scalar | avx2 | avx512 | avx512_bf16) when set. */
LA_API la_simd la_simd_detected(void);
/* Highest level this CPU can run, ignoring LONGATTN_SIMD. */
LA_API la_simd la_simd_hardware(void);
/* Whether the environment switches the library reads hold values it
 * knows: LONGATTN_SIMD (a level above, any case), LONGATTN_BF16 (0, 1 or
 * dot), LONGATTN_AMX (0 or 1) and LONGATTN_MODEL_MMAP (0 or 1, read by
 * la_model_load in longattn_model.h), each unset or empty too. The library
 * never prints, and ignores a value it does not know (the default
 * applies: for LONGATTN_SIMD the hardware's level), so a program that
 * wants such a typo seen calls this once: LA_OK, or LA_ERR_ARGUMENT with a
 * message naming each such variable, its value and the accepted values,
 * separated by "; " (the longattn CLI prints it as a warning). */
LA_API la_status la_env_check(void);

/* The n bytes at s as a plain decimal number: an optional sign, digits
 * with an optional point, an optional exponent, and nothing else. True
 * with *out set; false, *out untouched, for an empty string, blanks, hex
 * ("0x0.8"), inf, nan, more than 63 bytes, a NULL pointer or a value out
 * of double's normal range (strtod takes all but the last): above DBL_MAX,
 * or nonzero below DBL_MIN (2.2e-308; "1e-310" too). The rule for numbers
 * inside the library's option strings (la_kv_policy_parse's and
 * la_sparse_choice_parse's budgets); the longattn CLI applies it to its
 * number options. Sets no error message. */
LA_API bool la_parse_decimal(const char *s, size_t n, double *out);

typedef struct la_context la_context;

/* threads: 1..4096, or <= 0 for the OpenMP default (OMP_NUM_THREADS or
 * all cores, capped at 4096); above 4096 LA_ERR_ARGUMENT. The same for
 * la_context_set_threads (a refused count leaves the context's as it was).
 * A new context runs at la_simd_detected()'s level. la_context_destroy(NULL)
 * is a no-op. */
LA_API la_status la_context_create(la_context **out, int threads);
LA_API void la_context_destroy(la_context *ctx);
LA_API la_status la_context_set_threads(la_context *ctx, int threads);
LA_API int la_context_threads(const la_context *ctx);
/* Choose the SIMD level; fails with LA_ERR_UNSUPPORTED above the hardware's. */
LA_API la_status la_context_set_simd(la_context *ctx, la_simd level);
LA_API la_simd la_context_simd(const la_context *ctx);
/* bf16 products for la_matmul's n > 1 products of quantised weights (see
 * la_matmul_path): weights and activations rounded to bf16, products
 * summed in f32, on Intel AMX where usable, else with AVX512_BF16 dot
 * products (VDPBF16PS: AMD Zen 4, Cooper Lake, Sapphire Rapids without the
 * tile permission) at SIMD level avx512_bf16. One setting per context,
 * "bf16 products allowed": on in a new context wherever the machine has
 * either kernel, unless env LONGATTN_BF16=0 or LONGATTN_AMX=0;
 * la_context_set_bf16 and la_context_set_amx both set it (false: the f32
 * GEMM, to compare or to match an f32 reference). la_context_set_bf16(ctx,
 * true) fails with LA_ERR_UNSUPPORTED where the CPU has neither kernel,
 * la_context_set_amx(ctx, true) where AMX is not available (as before).
 * Env LONGATTN_BF16=dot keeps AMX off (the dot path instead, where the
 * level allows), read at each product: to compare the two on an AMX
 * machine.
 * la_amx_available: 1 when this build has the AMX kernel, the CPU has
 * AMX-TILE, AMX-BF16 and AVX-512, and the OS lets the process use the tile
 * state (asked once: on Linux it requests it); 0 otherwise, la_last_error
 * then says why. la_context_amx: bf16 products on and AMX available (AMX
 * is also only taken at SIMD level avx512 or above); la_context_bf16: the
 * setting. */
LA_API int la_amx_available(void);
LA_API la_status la_context_set_amx(la_context *ctx, bool on);
LA_API bool la_context_amx(const la_context *ctx);
LA_API la_status la_context_set_bf16(la_context *ctx, bool on);
LA_API bool la_context_bf16(const la_context *ctx);
/* Scratch memory for ops. By default the context owns a workspace that grows
 * to what an op asks for. A caller may instead lend memory of any alignment
 * (ops use it from its first 64-byte boundary, so a 64-byte aligned buffer
 * loses none of it); ops then fail with LA_ERR_WORKSPACE if it is too small.
 * la_context_workspace_bytes reports the bytes lent. Passing NULL, 0 returns
 * to the owned workspace. */
LA_API la_status la_context_set_workspace(la_context *ctx, void *mem, size_t bytes);
LA_API size_t la_context_workspace_bytes(const la_context *ctx);
/* CUDA tensors (device.kind LA_DEVICE_CUDA): calls on this context enqueue
 * their work on `stream` (a cudaStream_t; NULL, the default, is the legacy
 * default stream) and return without waiting for it. Device scratch memory
 * is owned by the context, grown on demand and freed by la_context_destroy
 * (which waits for the context's GPU work first); a call on a new stream
 * first waits, on the device, for the context's previous work. The
 * stream is stored in any build; only a build with the CUDA backend uses it. */
LA_API la_status la_context_set_cuda_stream(la_context *ctx, void *stream);
LA_API void *la_context_cuda_stream(const la_context *ctx);
/* Whether this build has the CUDA backend and this machine can run it: 1
 * when a CUDA device is usable, 0 otherwise (no backend built in, no driver,
 * no GPU); la_last_error then says why. */
LA_API int la_cuda_available(void);
/* Memory on a device, so a program with no CUDA toolkit of its own (the
 * longattn CLI is one) can place tensors on a GPU. la_device_alloc returns
 * `bytes` (> 0, else LA_ERR_ARGUMENT) of memory on `device` aligned to 256
 * bytes (*out NULL on failure): host memory for
 * LA_DEVICE_CPU, GPU memory for LA_DEVICE_CUDA; free it with
 * la_device_free and the same device (NULL is a no-op). la_device_copy
 * copies `bytes` between any two devices' memory and returns when the copy
 * is done; it orders after work on the device's legacy default stream only
 * (la_context_synchronize first when the context has a stream of its own). */
LA_API la_status la_device_alloc(la_device device, size_t bytes, void **out);
LA_API la_status la_device_free(la_device device, void *ptr);
LA_API la_status la_device_copy(void *dst, la_device dst_device, const void *src, la_device src_device,
                                size_t bytes);
/* Waits until the GPU work this context enqueued is done, and reports a
 * failure of that work (a kernel fault) as its status. CPU calls are done
 * when they return: for them (and in a build without a GPU backend) it
 * returns LA_OK at once. */
LA_API la_status la_context_synchronize(la_context *ctx);

/* ------------------------------------------------------------ ceilings */

/* This machine's ceilings, measured: what `longattn bench` reports every
 * kernel's speed against. Measure them right beside the timed work: on a
 * shared machine a neighbour moves them from one second to the next.
 * Each returns 0 for threads outside [1, 4096] (la_context_set_threads'
 * range), seconds not > 0 or a buffer of no float. */

/* FP32 FMA throughput of `threads` threads at SIMD level `simd`, in
 * GFLOP/s (an FMA counts 2), over about `seconds`. */
LA_API double la_peak_fma_gflops(la_simd simd, int threads, double seconds);
/* BF16 dot-product throughput (AVX512_BF16 vdpbf16ps) in GFLOP/s, or 0 when
 * the level has no BF16 dot instruction. */
LA_API double la_peak_bf16_gflops(la_simd simd, int threads, double seconds);
/* Intel AMX BF16 tile throughput (TDPBF16PS, 2 x 16 x 16 x 32 flops an
 * instruction, on tiles held in registers) in GFLOP/s: the ceiling of
 * la_matmul's "amx_bf16" path (la_matmul_path). 0 where AMX is not
 * available (la_amx_available). */
LA_API double la_peak_amx_bf16_gflops(int threads, double seconds);
/* Read bandwidth in GB/s: threads summing a buffer of `bytes` (make it
 * several times the last-level cache), plainly and with each line asked
 * for ahead, the better kept; 0 if the buffer cannot be allocated. */
LA_API double la_peak_read_gbps(int threads, size_t bytes);
/* Read-modify-write bandwidth in GB/s, bytes read plus bytes written:
 * threads updating a buffer of `bytes` in place, each byte read once and
 * written once (a decode step's traffic on its state); 0 if the buffer
 * cannot be allocated. */
LA_API double la_peak_update_gbps(int threads, size_t bytes);

/* --------------------------------------------------- exact attention */

typedef enum {
    LA_SCORE_SOFTMAX = 0,  /* p = softmax(s) over visible keys */
    LA_SCORE_SIGMOID = 1,  /* p = sigmoid(s + sigmoid_bias), no normalisation */
    LA_SCORE_COUNT
} la_score_fn;

typedef struct {
    float scale;               /* 0 means 1/sqrt(head_dim) */
    int causal;                /* nonzero: causal, bottom-right aligned when Lq != Lk */
    int64_t window_left;       /* keys visible left of the diagonal; -1 = unlimited */
    int64_t window_right;      /* keys visible right of the diagonal; -1 = unlimited */
    int64_t sinks;             /* first `sinks` keys visible whatever window_left says (StreamingLLM);
                                * never past causal's or window_right's limit */
    float softcap;             /* s = softcap * tanh(s / softcap); 0 = off */
    const float *alibi_slopes; /* [H] f32; adds -slope * |i - j| (bottom-right aligned), after the
                                * softcap; NULL = off */
    la_score_fn score;
    float sigmoid_bias;        /* added before sigmoid (often -log(Lk)) */
    /* Variable-length packed batch: q is [Tq, H, D] and k/v are [Tk, Hkv, D];
     * sequence i owns rows cu_seqlens_q[i] .. cu_seqlens_q[i+1]-1 (and of
     * k/v by cu_seqlens_k). Rows past the last offset belong to no
     * sequence: no call reads them or writes their out, lse, dq, dk, dv. */
    const int32_t *cu_seqlens_q; /* [num_seqs + 1] or NULL for a dense batch */
    const int32_t *cu_seqlens_k; /* [num_seqs + 1]; required with cu_seqlens_q */
    int64_t num_seqs;
    /* Backward only: 1 asks for dQ (and dK, dV) summed in a fixed order, so
     * that two runs on the same inputs (and, on the CPU, the same thread
     * count) give bit-identical gradients; 0 (the default) lets a backend
     * use atomics or a dynamic schedule where that is faster: the CPU gives
     * every output one writer either way, but with 0 its threads take key
     * blocks as they come free, so dQ may differ in the last bits from run
     * to run; the CUDA backward on Hopper
     * (head dims 64 and 128) adds dQ with f32 atomics unless this is 1, then
     * computes dQ in its own query-parallel pass. */
    int deterministic;
} la_attention_params;

/* Defaults: scale 0 (1/sqrt(D)), not causal, unlimited window, no sinks,
 * softcap off, no ALiBi, softmax, dense batch, deterministic 0. Always start from this so new
 * fields keep their off value. */
LA_API la_attention_params la_attention_params_default(void);

/* What every attention call checks before it touches memory:
 *  - Sizes (LA_ERR_SHAPE): batch, Lq, H, Hkv and D must be > 0, except that
 *    k/v may hold no key (dense Lk = 0, a packed Tk = 0, a decode cache of
 *    capacity 0 or seqlens_k 0): every query row then sees no key and gets
 *    out 0, lse -inf, dq 0. A packed q may hold no token (Tq = 0).
 *  - Counts (LA_ERR_OVERFLOW): every tensor's element count, and
 *    num_seqs x heads x max(L, 1) x D on the query and the key side, fit in
 *    int64, whatever memory the strides span.
 *  - Alignment: tensor data aligned to its element size (LA_ERR_STRIDE);
 *    alibi_slopes, cu_seqlens_*, seqlens_k and block_table to 4 bytes
 *    (LA_ERR_ARGUMENT).
 *  - No tensor overlaps itself (LA_ERR_STRIDE): taking the dims of size > 1
 *    by increasing stride, each stride is at least 1 + the sum of
 *    (size - 1) x stride over the dims before it (a sufficient test that
 *    distinct elements lie in distinct memory). Every permuted or padded
 *    layout passes ([B, H, L, D] memory, rows with gaps); zero strides on
 *    dims of size > 1 (broadcast views) and axes stepping into each other
 *    do not. A dim of size 1 may have any stride >= 0. Inputs too.
 *  - Outputs share no memory (LA_ERR_ARGUMENT) with any input (tensors and
 *    the arrays above) or with each other: no call runs in place. Inputs may
 *    share memory with each other (q = k = v; a packed [T, 3, H, D] qkv).
 *    Views are compared exactly, row by row, so outputs interleaved in one
 *    buffer without touching pass (dq, dk, dv in a packed [T, 3, H, D]
 *    gradient; out and lse rows alternating in one buffer). Only layouts
 *    whose strides are far smaller than their extents can exhaust the
 *    exact search; they are then rejected as overlapping.
 *  - No argument lies in a workspace lent to the context (LA_ERR_ARGUMENT).
 *
 * out = attention(q, k, v).
 *  dense : q [B, Lq, H, D], k/v [B, Lk, Hkv, D], out [B, Lq, H, D], lse [B, Lq, H]
 *  varlen: q [Tq, H, D],    k/v [Tk, Hkv, D],    out [Tq, H, D],    lse [Tq, H]
 * q/k/v: f32, bf16 or f16 (all three the same); out: f32 or q's dtype;
 * lse: f32 or NULL (softmax only). D is a multiple of 8, at most 512; the
 * last dim of every tensor must have stride 1. A query row that sees no key
 * gets out = 0 and lse = -inf. */
LA_API la_status la_attention_forward(la_context *ctx, const la_attention_params *p,
                               const la_tensor *q, const la_tensor *k, const la_tensor *v,
                               la_tensor *out, la_tensor *lse);

/* Gradients of the forward by recomputation. out and lse are the forward's
 * (lse required for softmax, NULL for sigmoid, as in the forward); out and
 * dout are shaped like q, each f32 or the inputs' dtype. dq, dk, dv are
 * shaped like q, k, v; dtype f32 or the inputs' dtype; they are
 * overwritten, not accumulated into. */
LA_API la_status la_attention_backward(la_context *ctx, const la_attention_params *p,
                                const la_tensor *q, const la_tensor *k, const la_tensor *v,
                                const la_tensor *out, const la_tensor *dout, const la_tensor *lse,
                                la_tensor *dq, la_tensor *dk, la_tensor *dv);

/* Attention over the union of disjoint key sets, from attention over each
 * set: the merge split-K decoding, ring attention and KV selection need.
 *   out = sum_i exp(lse_i - lse) * out_i,   lse = log sum_i exp(lse_i)
 * n_parts >= 1 parts (any number), each out_parts[i] shaped like out
 * ([B, L, H, D] or [T, H, D]; any D > 0, L or T may be 0) in f32, bf16 or
 * f16, each part its own dtype, and lse_parts[i] shaped like out without D
 * ([B, L, H] or [T, H]) in f32 (natural log, as la_attention_forward
 * returns it). out is f32, bf16 or f16; lse is f32 or NULL. The last dim of
 * every tensor has stride 1. Computed in f32, shifted by the row's largest
 * lse_i, so no lse overflows.
 * Special values, per row: a part whose lse_i is -inf saw no key and is
 * skipped (its out_i row is not read); a row where every part has -inf gets
 * out 0 and lse -inf; a NaN or +inf lse_i makes the row's out and lse NaN.
 * Aliasing: out may be exactly the view of one part (same data, dtype,
 * shape and strides) and lse exactly one part's lse: the merge then runs in
 * place, as ring attention accumulates. Any other shared byte between an
 * output and an input, or between out and lse, is LA_ERR_ARGUMENT (views
 * that interleave in one buffer without sharing a byte are fine).
 * Errors: LA_ERR_NULL (ctx, out_parts, lse_parts, out or a tensor's data),
 * LA_ERR_ARGUMENT (n_parts < 1, overlap), LA_ERR_SHAPE (dims, sizes that
 * disagree with out's), LA_ERR_DTYPE (an lse not f32, an unknown dtype),
 * LA_ERR_STRIDE, LA_ERR_OVERFLOW, LA_ERR_DEVICE (tensors on different
 * devices, or one this build has no backend for), and the workspace's
 * LA_ERR_NOMEM / LA_ERR_WORKSPACE. Nothing is written on failure. */
LA_API la_status la_attention_merge(la_context *ctx, int n_parts, const la_tensor *out_parts,
                                    const la_tensor *lse_parts, la_tensor *out, la_tensor *lse);

/* --------------------------------------------------- decode attention */

/* Where the keys of each sequence live.
 * Contiguous (block_table NULL): k/v are [B, Lk_cap, Hkv, D].
 * Paged: k/v are [num_blocks, block_size, Hkv, D]; sequence b's token t sits
 * in block block_table[b * blocks_per_seq + t / block_size], row t % block_size. */
typedef struct {
    const int32_t *seqlens_k;    /* [B] keys in use per sequence; NULL = Lk_cap (contiguous only) */
    const int32_t *block_table;  /* [B, blocks_per_seq] or NULL */
    int64_t blocks_per_seq;
} la_kv_layout;

/* One or a few new query tokens per sequence against a long K/V cache.
 * q [B, Lq, H, D] (Lq small; causal aligns them with the last Lq keys),
 * out [B, Lq, H, D] f32 or q's dtype, lse [B, Lq, H] f32 or NULL.
 * q is f32; k/v f32, bf16 or f16. Keys are split across threads and the
 * partial results merged by log-sum-exp; each K/V head is read once for all
 * the query heads that share it. varlen fields of p must be unset. */
LA_API la_status la_attention_decode(la_context *ctx, const la_attention_params *p,
                              const la_tensor *q, const la_tensor *k, const la_tensor *v,
                              const la_kv_layout *layout, la_tensor *out, la_tensor *lse);

/* Append n new tokens per sequence to the cache la_attention_decode reads:
 * token i of sequence b goes to position seqlens_k[b] + i (its block
 * block_table[b][pos / block_size], row pos % block_size, when paged).
 * k_new, v_new [B, n, Hkv, D] f32, bf16 or f16 (n may be 0), converted to
 * the cache's dtype (round to nearest even); k_cache, v_cache f32, bf16 or
 * f16 with the same shape and strides, [B, cap, Hkv, D] contiguous or
 * [num_blocks, block_size, Hkv, D] paged. layout->seqlens_k (required)
 * holds the lengths before the append and is not changed: add n after.
 * The layout's arrays are host memory (as for decode); the tensors may live
 * on the CPU or one CUDA device. Errors: LA_ERR_NULL, LA_ERR_SHAPE,
 * LA_ERR_DTYPE, LA_ERR_STRIDE, LA_ERR_OVERFLOW, LA_ERR_SEQLENS (a length
 * plus n past the capacity, a block id out of range), LA_ERR_ARGUMENT (two
 * new rows in one slot: a block shared by two tables or listed twice; the
 * cache overlapping the new rows), LA_ERR_DEVICE, LA_ERR_NOMEM. Nothing is
 * written on failure. */
LA_API la_status la_attention_kv_append(la_context *ctx, const la_kv_layout *layout, const la_tensor *k_new,
                                        const la_tensor *v_new, la_tensor *k_cache, la_tensor *v_cache);

/* ------------------------------------------------------ linear mixers */

/* Linear attention with decay: a causal mixer whose decoding state has a
 * constant size. Per sequence and head, with x~ the feature map phi(x):
 *   S_t = diag(exp(g_t)) S_{t-1} + phi(k_t) v_t^T          S is [Dk, Dv]
 *   o_t = scale * phi(q_t)^T S_t
 * and with normalisation a running denominator z_t = diag(exp(g_t)) z_{t-1}
 * + phi(k_t), o_t = (scale phi(q_t)^T S_t) / (scale phi(q_t)^T z_t + eps).
 * g_t is the decay in log space: 0 (none), a fixed per-head scalar
 * (RetNet, Lightning Attention-2), a per-token scalar (simple GLA, Mamba-2
 * SSD) or a per-key-channel vector (GLA). Decays are used as differences
 * of log sums that are <= 0, never as exp(+x): very long sequences and
 * saturated gates (g = -1e30 or -inf) give 0, not NaN. Data-dependent g
 * must be <= 0 (or -inf); larger values are the caller's to avoid (the
 * state then grows without bound).
 * Shapes (dense; varlen drops B and packs tokens as in attention):
 *   q [B, L, H, Dk], k [B, L, Hkv, Dk], v [B, L, Hkv, Dv]: H % Hkv == 0,
 *   query head h reads k/v head h / (H / Hkv); g [B, L, H] (per token) or
 *   [B, L, H, Dk] (per channel), f32; out [B, L, H, Dv] f32 or q's dtype;
 *   states [N, H, Dk, Dv'] f32 (N = B or num_seqs), Dv' = Dv, or Dv + 1 with
 *   normalisation (the last column is z). Dk, Dv in 1..LA_MAX_HEAD_DIM.
 * Strides, here and for every mixer below (delta rule, state spaces,
 * Titans): each tensor's last dim has stride 1 (LA_ERR_STRIDE otherwise);
 * its other strides are free within attention's no-self-overlap rule, so
 * [B, H, L, D] memory or padded rows need no copy. */
typedef enum {
    LA_FEATURE_IDENTITY = 0, /* phi(x) = x */
    LA_FEATURE_ELU1 = 1,     /* phi(x) = elu(x) + 1 */
    LA_FEATURE_RELU = 2,     /* phi(x) = max(x, 0) */
    /* 2nd-order Taylor map of Based (Arora et al. 2024): phi(x) = [1,
     * x / Dk^(1/4), vec(x x^T) / (sqrt(2) sqrt(Dk))], so phi(q).phi(k) =
     * 1 + s + s^2 / 2 with s = q.k / sqrt(Dk). Feature dim Df = 1 + Dk + Dk^2,
     * which must be <= LA_MAX_HEAD_DIM: Dk <= 22 (LA_ERR_UNSUPPORTED above). */
    LA_FEATURE_TAYLOR = 3,
    /* Hedgehog (Zhang et al. 2024): phi(x) = softmax([x W_h, -x W_h]) over
     * its 2 Dm entries, W = params.feature_proj [H, Dk, Dm] f32 (query head
     * h's W maps q of head h and the k it reads). Df = 2 Dm <= LA_MAX_HEAD_DIM. */
    LA_FEATURE_HEDGEHOG = 4,
    LA_FEATURE_COUNT
} la_feature_map;

typedef enum {
    LA_DECAY_NONE = 0,    /* g = 0 */
    LA_DECAY_HEAD = 1,    /* g = params.head_log_decay[h], fixed */
    LA_DECAY_TOKEN = 2,   /* g [.., H] per token and head */
    LA_DECAY_CHANNEL = 3, /* g [.., H, Dk] per token, head and key channel */
    LA_DECAY_COUNT
} la_decay_kind;

typedef enum {
    LA_LINEAR_CHUNKED = 0,   /* intra-chunk masked products + an inter-chunk state recurrence */
    LA_LINEAR_RECURRENT = 1, /* token by token */
    LA_LINEAR_FORM_COUNT
} la_linear_form;

typedef struct {
    float scale;                 /* 0 means 1/sqrt(Dk) */
    la_feature_map feature;
    int normalize;               /* divide by the running denominator */
    float norm_eps;              /* added to the denominator; >= 0 */
    la_decay_kind decay;
    const float *head_log_decay; /* [H] f32, each finite and <= 0: LA_DECAY_HEAD only */
    la_linear_form form;
    int64_t chunk_size;          /* chunked form and backward: tokens per chunk, 1..1024 (default 64) */
    const int32_t *cu_seqlens;   /* [num_seqs + 1] or NULL for a dense batch */
    int64_t num_seqs;
    /* Hedgehog only: W [H, Dk, feature_proj_dim] f32, contiguous, finite */
    const float *feature_proj;
    int64_t feature_proj_dim;    /* Dm >= 1, 2 Dm <= LA_MAX_HEAD_DIM */
    /* backward with Hedgehog: dL/dW [H, Dk, Dm] f32, contiguous,
     * overwritten; NULL = not wanted. Ignored by forward and decode. */
    float *feature_proj_grad;
    /* 1: every token sees all tokens of its sequence, o_t = scale phi(q_t)^T
     * S_L with S_L = S_0 + sum_s phi(k_s) v_s^T over the whole sequence
     * (normalised by z_L likewise); the final state is S_L. No decay
     * (LA_ERR_ARGUMENT otherwise); form and chunk_size are unused; the
     * decode step is causal (non_causal set there is LA_ERR_ARGUMENT). */
    int non_causal;
} la_linear_params;

/* Defaults: scale 0 (1/sqrt(Dk); 1 with the Taylor and Hedgehog maps,
 * which carry their own), identity map, no normalisation (eps 1e-6 when
 * turned on), no decay, causal, chunked form, chunk 64, dense batch.
 * The state's Dk below is the feature dim Df with the Taylor and Hedgehog
 * maps (1 + Dk + Dk^2, 2 Dm), whose decays must be none, per head or per
 * token (a per-channel decay is LA_ERR_UNSUPPORTED there). */
LA_API la_linear_params la_linear_params_default(void);

/* out = the mixer over whole sequences. initial_state NULL starts from 0;
 * final_state NULL does not return it; g NULL unless the decay is per token
 * or per channel. Errors: LA_ERR_NULL, LA_ERR_SHAPE (sizes disagree, heads
 * do not divide, a state of the wrong shape), LA_ERR_DTYPE, LA_ERR_STRIDE,
 * LA_ERR_OVERFLOW, LA_ERR_ARGUMENT (an option out of range: chunk_size < 1,
 * a bad head_log_decay; an output overlapping another argument),
 * LA_ERR_SEQLENS (bad cu_seqlens), LA_ERR_UNSUPPORTED (chunk_size above
 * 1024 in the chunked form, as the delta rule's), LA_ERR_DEVICE. The
 * aliasing rules are attention's: outputs share no memory with anything. */
LA_API la_status la_linear_attention_forward(la_context *ctx, const la_linear_params *p, const la_tensor *q,
                                             const la_tensor *k, const la_tensor *v, const la_tensor *g,
                                             const la_tensor *initial_state, la_tensor *out,
                                             la_tensor *final_state);

/* One token per sequence, state updated in place: q [B, H, Dk], k [B, Hkv,
 * Dk], v [B, Hkv, Dv], g [B, H] or [B, H, Dk] (or NULL), state [B, H, Dk,
 * Dv'] f32, out [B, H, Dv]. p->form, chunk_size and cu_seqlens are unused
 * (cu_seqlens must be NULL). */
LA_API la_status la_linear_attention_decode(la_context *ctx, const la_linear_params *p, const la_tensor *q,
                                            const la_tensor *k, const la_tensor *v, const la_tensor *g,
                                            la_tensor *state, la_tensor *out);

/* Gradients of the forward by recomputation, with the chunked algorithm
 * (p->form is ignored): dq, dk, dv shaped like q, k, v (f32 or their
 * dtype), dg like g (f32; NULL exactly when g is), dinitial_state like the
 * state (NULL: not wanted). dfinal_state (NULL = 0) is the gradient
 * reaching the final state. Overwritten, not accumulated into. With
 * normalisation the state's last column (z) takes its gradient too; with
 * Hedgehog, params->feature_proj_grad (if set) receives dL/dW. */
LA_API la_status la_linear_attention_backward(la_context *ctx, const la_linear_params *p, const la_tensor *q,
                                              const la_tensor *k, const la_tensor *v, const la_tensor *g,
                                              const la_tensor *initial_state, const la_tensor *dout,
                                              const la_tensor *dfinal_state, la_tensor *dq, la_tensor *dk,
                                              la_tensor *dv, la_tensor *dg, la_tensor *dinitial_state);

/* --------------------------------------------------------- delta rule */

/* The delta rule (DeltaNet) and the gated delta rule (Gated DeltaNet): a
 * causal mixer whose state is corrected toward each new value rather than
 * only added to. Per sequence and query head h, with k/v head h / (H / Hkv)
 * and S [Dk, Dv] f32:
 *   a_t = exp(g_t) (gated; 1 otherwise)
 *   u_t = v_t - (a_t S_{t-1})^T k_t            (what the decayed state predicts for k_t)
 *   S_t = a_t S_{t-1} + beta_t k_t u_t^T       = a_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T
 *   o_t = scale S_t^T q_t
 * With qk_l2norm, q and k are first divided by sqrt(|x|^2 + 1e-6) (fla's
 * use_qk_l2norm_in_kernel); the delta rule is stable for |k| <= 1 and
 * beta in [0, 2]. The chunked form is the WY / UT-transform algorithm of
 * fla's chunk_delta_rule / chunk_gated_delta_rule: per chunk of C tokens a
 * unit lower-triangular solve (I + A) [U | W] = [beta V | beta exp(G) K],
 * A[i][j] = beta_i k_i.k_j exp(G_i - G_j) (j < i), then dense products.
 * Decays are products of factors in [0, 1] and exps of sums of log decays
 * <= 0 (never a difference of cumulative sums): a saturated gate (g = -inf
 * or -1e30) resets the state exactly, without NaN. g must be <= 0 (or
 * -inf); larger values are the caller's to avoid.
 * Shapes (dense; varlen drops B and packs tokens as in attention):
 *   q [B, L, H, Dk], k [B, L, Hkv, Dk], v [B, L, Hkv, Dv]: H % Hkv == 0;
 *   beta [B, L, H] f32 or q's dtype; g [B, L, H] f32 (gated only);
 *   out [B, L, H, Dv] f32 or q's dtype; states [N, H, Dk, Dv] f32 (N = B
 *   or num_seqs): one state per query head, so grouped heads share keys
 *   and values but each has its own beta, gate and state (H == Hkv is the
 *   usual DeltaNet). Dk, Dv in 1..LA_MAX_HEAD_DIM. */
typedef struct {
    float scale;               /* 0 means 1/sqrt(Dk) */
    int gated;                 /* 1: Gated DeltaNet, g required; 0: g must be NULL */
    int qk_l2norm;             /* 1: L2-normalise q and k inside the op */
    la_linear_form form;       /* forward: chunked (WY form) or recurrent */
    int64_t chunk_size;        /* chunked form: tokens per chunk, 1..1024 (default 64) */
    const int32_t *cu_seqlens; /* [num_seqs + 1] or NULL for a dense batch */
    int64_t num_seqs;
} la_delta_params;

/* Defaults: scale 0 (1/sqrt(Dk)), not gated, no normalisation, chunked,
 * chunk 64, dense batch. */
LA_API la_delta_params la_delta_params_default(void);

/* out = the delta rule over whole sequences. initial_state NULL starts
 * from 0; final_state NULL does not return it. Errors: LA_ERR_NULL (a
 * required tensor NULL, g among them when gated), LA_ERR_SHAPE (sizes
 * disagree, heads do not divide, a state of the wrong shape), LA_ERR_DTYPE,
 * LA_ERR_STRIDE, LA_ERR_OVERFLOW, LA_ERR_ARGUMENT (chunk_size < 1, g given
 * without gated, an output overlapping another argument), LA_ERR_SEQLENS (bad cu_seqlens),
 * LA_ERR_UNSUPPORTED (chunk_size > 1024, head dims > LA_MAX_HEAD_DIM, a
 * tensor not on the CPU: the delta rule has CPU kernels only). */
LA_API la_status la_delta_rule_forward(la_context *ctx, const la_delta_params *p, const la_tensor *q,
                                       const la_tensor *k, const la_tensor *v, const la_tensor *beta,
                                       const la_tensor *g, const la_tensor *initial_state, la_tensor *out,
                                       la_tensor *final_state);

/* One token per sequence, state updated in place: q [B, H, Dk], k [B, Hkv,
 * Dk], v [B, Hkv, Dv], beta [B, H], g [B, H] (gated) or NULL, state [B, H,
 * Dk, Dv] f32, out [B, H, Dv]. p->form, chunk_size are unused; cu_seqlens
 * must be NULL. */
LA_API la_status la_delta_rule_decode(la_context *ctx, const la_delta_params *p, const la_tensor *q,
                                      const la_tensor *k, const la_tensor *v, const la_tensor *beta,
                                      const la_tensor *g, la_tensor *state, la_tensor *out);

/* Gradients of the forward: dq, dk, dv shaped like q, k, v (f32 or q's
 * dtype; dk, dv summed over the query heads sharing a k/v head), dbeta like
 * beta (f32 or q's dtype), dg like g (f32; NULL exactly when not gated),
 * dinitial_state like the state (NULL: not wanted). dfinal_state (NULL =
 * 0) is the gradient reaching the final state. Overwritten, not
 * accumulated into. Both forms keep the state at every chunk boundary
 * (chunk_size tokens apart; one state per chunk per thread) and recompute
 * the rest: p->form LA_LINEAR_CHUNKED differentiates the WY form chunk by
 * chunk with dense products, LA_LINEAR_RECURRENT walks the tokens
 * backwards over one chunk's recomputed states at a time. */
LA_API la_status la_delta_rule_backward(la_context *ctx, const la_delta_params *p, const la_tensor *q,
                                        const la_tensor *k, const la_tensor *v, const la_tensor *beta,
                                        const la_tensor *g, const la_tensor *initial_state, const la_tensor *dout,
                                        const la_tensor *dfinal_state, la_tensor *dq, la_tensor *dk, la_tensor *dv,
                                        la_tensor *dbeta, la_tensor *dg, la_tensor *dinitial_state);
/* --- state spaces and attention as an RNN */

/* Three recurrent mixers whose decoding state has a constant size, each in
 * a chunked form (prefill, training), a recurrent form (token by token)
 * that agrees with it, a decode step updating its state in place, and a
 * backward. Shapes are dense [B, L, ...] or varlen packed [T, ...] with
 * cu_seqlens (the batch dim dropped), as for the linear mixers above;
 * inputs f32, bf16 or f16, states and parameters (A, D, biases, weights,
 * Aaren's query) f32. Outputs are f32 or the input's dtype. Outputs share no
 * memory with anything (attention's aliasing rule). Errors: LA_ERR_NULL,
 * LA_ERR_SHAPE, LA_ERR_DTYPE, LA_ERR_STRIDE, LA_ERR_OVERFLOW, LA_ERR_ARGUMENT
 * (an option out of range, an output overlapping another argument, a bad
 * A), LA_ERR_SEQLENS, LA_ERR_UNSUPPORTED, LA_ERR_DEVICE, each with a
 * message. */

typedef enum {
    LA_SCAN_CHUNKED = 0,   /* tokens staged a chunk at a time (Mamba's selective-scan kernel; Aaren: a
                            * parallel prefix scan over chunks) */
    LA_SCAN_RECURRENT = 1, /* token by token */
    LA_SCAN_FORM_COUNT
} la_scan_form;

/* ---- selective state space (Mamba-1) ----
 * Per sequence, channel d in [0, D) and state index n in [0, N), with g =
 * d / (D / G) the group of B and C that channel d reads:
 *   dt_t   = softplus(delta_t[d] + delta_bias[d])     (or without softplus: the sum itself)
 *   h_t[n] = exp(dt_t A[d][n]) h_{t-1}[n] + dt_t B_t[g][n] u_t[d]
 *   y_t[d] = sum_n C_t[g][n] h_t[n] + Dskip[d] u_t[d]
 *   out_t[d] = y_t[d] * silu(z_t[d])                  (without z: y_t[d])
 * A is passed as A itself, [D, N] f32 with every element finite and <= 0
 * (Mamba stores A_log and uses A = -exp(A_log): pass that). exp(dt A) is
 * exp of a number <= 0: a huge dt (or softplus of a huge delta, which is
 * delta itself) gives 0, dt = 0 gives 1, never NaN; softplus(x) for x < -88
 * is 0. Tensors (dense; varlen drops B): u, delta, z [B, L, D]; B, C [B, L,
 * G, N] or [B, L, N] (G = 1), G dividing D; A [D, N]; Dskip, delta_bias [D]
 * (each optional, NULL); states h [num_seqs or B, D, N] f32. */
typedef struct {
    const la_tensor *u, *delta, *A, *B, *C; /* required */
    const la_tensor *Dskip, *z, *delta_bias; /* optional (NULL) */
} la_ssm_inputs;

/* Gradients of la_selective_scan_backward, overwritten (not accumulated):
 * du, ddelta, dz shaped like u (f32 or u's dtype; dz exactly when z);
 * dA [D, N], dDskip [D], ddelta_bias [D] f32 (NULL: not wanted);
 * dB, dC shaped like B, C in f32 (they sum over the channels of a group);
 * dinitial_state [num_seqs, D, N] f32 (NULL: not wanted). */
typedef struct {
    la_tensor *du, *ddelta, *dA, *dB, *dC; /* du, ddelta, dB, dC required */
    la_tensor *dDskip, *dz, *ddelta_bias, *dinitial_state;
} la_ssm_grads;

typedef struct {
    int delta_softplus;        /* dt = softplus(delta + bias) (default 1), else delta + bias */
    la_scan_form form;
    int64_t chunk_size;        /* chunked form: tokens per chunk, 1..4096 (default 64) */
    const int32_t *cu_seqlens; /* [num_seqs + 1] or NULL for a dense batch */
    int64_t num_seqs;
} la_ssm_params;

LA_API la_ssm_params la_ssm_params_default(void);

/* out [B, L, D] = the scan over whole sequences. initial_state NULL starts
 * from 0; final_state NULL does not return it. */
LA_API la_status la_selective_scan_forward(la_context *ctx, const la_ssm_params *p, const la_ssm_inputs *in,
                                           const la_tensor *initial_state, la_tensor *out, la_tensor *final_state);
/* One token per sequence: u, delta, z [B, D], B, C [B, G, N] or [B, N],
 * state [B, D, N] f32 updated in place, out [B, D]. p->form, chunk_size
 * and cu_seqlens are unused (cu_seqlens must be NULL). */
LA_API la_status la_selective_scan_decode(la_context *ctx, const la_ssm_params *p, const la_ssm_inputs *in,
                                          la_tensor *state, la_tensor *out);
/* Gradients by recomputation (states checkpointed every chunk_size tokens;
 * p->form is ignored). dfinal_state (NULL = 0) is the gradient reaching
 * the final state. */
LA_API la_status la_selective_scan_backward(la_context *ctx, const la_ssm_params *p, const la_ssm_inputs *in,
                                            const la_tensor *initial_state, const la_tensor *dout,
                                            const la_tensor *dfinal_state, const la_ssm_grads *grads);

/* ---- short causal depthwise convolution (before the scan in Mamba blocks) ----
 * Per sequence and channel d, width W >= 1, with x at positions before the
 * sequence taken from the state (its W - 1 last inputs, oldest first; 0
 * without a state):
 *   out_t[d] = act(bias[d] + sum_{j<W} weight[d][j] x_{t-W+1+j}[d]),  act = identity or silu
 * x, out [B, L, D] (varlen [T, D]); weight [D, W] f32; bias [D] f32 or NULL;
 * states [num_seqs or B, D, W - 1] f32 (with W = 1 the state has no
 * columns and may be NULL). */
typedef enum { LA_CONV_ACT_NONE = 0, LA_CONV_ACT_SILU = 1, LA_CONV_ACT_COUNT } la_conv_activation;

typedef struct {
    la_conv_activation activation; /* default LA_CONV_ACT_SILU, as in Mamba */
    const int32_t *cu_seqlens;
    int64_t num_seqs;
} la_conv1d_params;

LA_API la_conv1d_params la_conv1d_params_default(void);

LA_API la_status la_causal_conv1d_forward(la_context *ctx, const la_conv1d_params *p, const la_tensor *x,
                                          const la_tensor *weight, const la_tensor *bias,
                                          const la_tensor *initial_state, la_tensor *out, la_tensor *final_state);
/* One token per sequence: x, out [B, D], state [B, D, W - 1] in place. */
LA_API la_status la_causal_conv1d_update(la_context *ctx, const la_conv1d_params *p, const la_tensor *x,
                                         const la_tensor *weight, const la_tensor *bias, la_tensor *state,
                                         la_tensor *out);
/* dx like x (f32 or x's dtype), dweight [D, W] f32, dbias [D] f32 (NULL:
 * not wanted), dinitial_state like the state (NULL: not wanted), all
 * overwritten; dfinal_state (NULL = 0) is the gradient reaching the final
 * state. */
LA_API la_status la_causal_conv1d_backward(la_context *ctx, const la_conv1d_params *p, const la_tensor *x,
                                           const la_tensor *weight, const la_tensor *bias,
                                           const la_tensor *initial_state, const la_tensor *dout,
                                           const la_tensor *dfinal_state, la_tensor *dx, la_tensor *dweight,
                                           la_tensor *dbias, la_tensor *dinitial_state);

/* ---- Aaren: attention as an RNN (Feng et al. 2024) ----
 * Softmax attention of a learned query q [H, Dk] (f32, one per head) over
 * the keys and values of every prefix: per sequence and head,
 *   s_i = scale q . k_i,   o_t = sum_{i<=t} exp(s_i) v_i / sum_{i<=t} exp(s_i)
 * with a state (m, u, w): the running max of the scores, the numerator
 * sum exp(s_i - m) v_i and the denominator sum exp(s_i - m). States are
 * [num_seqs or B, H, Dv + 2] f32: columns 0..Dv-1 hold u, column Dv w,
 * column Dv + 1 m; the empty state is u = 0, w = 0, m = -inf (what a NULL
 * initial_state means). k [B, L, H, Dk], v [B, L, H, Dv], out [B, L, H, Dv]
 * (varlen [T, H, ...]); Dk, Dv in 1..LA_MAX_HEAD_DIM. */
typedef struct {
    float scale;               /* 0 means 1/sqrt(Dk) */
    la_scan_form form;         /* chunked: a parallel prefix scan over blocks of whole chunks of (m, u, w)
                                * where the (sequence, head) pairs leave threads idle; else each pair in
                                * one pass, its keys and values read once */
    int64_t chunk_size;        /* 1..4096 (default 64) */
    const int32_t *cu_seqlens;
    int64_t num_seqs;
} la_aaren_params;

LA_API la_aaren_params la_aaren_params_default(void);

LA_API la_status la_aaren_forward(la_context *ctx, const la_aaren_params *p, const la_tensor *q, const la_tensor *k,
                                  const la_tensor *v, const la_tensor *initial_state, la_tensor *out,
                                  la_tensor *final_state);
/* One token per sequence: k [B, H, Dk], v [B, H, Dv], state [B, H, Dv + 2]
 * in place, out [B, H, Dv]. */
LA_API la_status la_aaren_decode(la_context *ctx, const la_aaren_params *p, const la_tensor *q, const la_tensor *k,
                                 const la_tensor *v, la_tensor *state, la_tensor *out);
/* dq [H, Dk] f32 (summed over sequences and tokens), dk, dv like k, v (f32
 * or their dtype), dinitial_state like the state (NULL: not wanted).
 * dfinal_state (like the state, f32; NULL = 0) is the gradient reaching the
 * final state's columns (u, w, m) as la_aaren_forward returns them; m, the
 * running max, passes its part (less u . du + w dw, the part u and w take
 * through their rescaling) to the score that set it (the first of equal
 * maxima), or to the initial state's m when no score exceeded it. */
LA_API la_status la_aaren_backward(la_context *ctx, const la_aaren_params *p, const la_tensor *q, const la_tensor *k,
                                   const la_tensor *v, const la_tensor *initial_state, const la_tensor *dout,
                                   const la_tensor *dfinal_state, la_tensor *dq, la_tensor *dk, la_tensor *dv,
                                   la_tensor *dinitial_state);
/* --- neural memory (Titans) */

/* Titans' long-term memory, linear-memory variant (Behrouz et al. 2024,
 * "Titans: Learning to Memorize at Test Time"). Per sequence and query head
 * a memory M [Dk, Dv] learns the map k -> v while it reads, by gradient
 * steps on the associative loss l(M; k, v) = ||M^T k - v||^2 with momentum
 * S [Dk, Dv] and forgetting:
 *   grad_t = 2 k_t (M_c^T k_t - v_t)^T       the loss's gradient at M_c
 *   S_t = eta_t S_{t-1} - theta_t grad_t      momentum ("surprise")
 *   M_t = (1 - alpha_t) M_{t-1} + S_t         weight decay (forgetting)
 *   y_t = M_t^T q_t
 * M_c is the memory at the start of t's chunk: as in the paper's parallel
 * training, all gradients of a chunk of chunk_size tokens are taken at the
 * memory of the chunk's start (mini-batch gradient descent), so the chunk
 * size is part of the model; chunk_size 1 is the per-token recurrence
 * (M_c = M_{t-1}). Chunks start at each sequence's first token in each
 * call: two calls carry the state exactly as one call over the
 * concatenation when the first call's length is a multiple of chunk_size.
 * The two forms compute the same function:
 *  LA_LINEAR_CHUNKED: per chunk, with R = 2 diag(theta) (K M_c - V) and the
 *    scalar kernels E[t][j] = prod_{j<s<=t} eta_s and W[t][j] =
 *    sum_{i=j..t} prod_{i<s<=t} (1 - alpha_s) E[i][j] (scans over the chunk),
 *    Y = diag(b) Q M_c + diag(c) Q S_c - (W . Q K^T) R, and the states at the
 *    chunk's end likewise: matrix products, the chunk's tokens in parallel.
 *  LA_LINEAR_RECURRENT: token by token.
 * eta, theta, alpha: per token and query head, f32 [B, L, H] (varlen [T,
 * H]), data-dependent; eta, alpha in [0, 1] and theta >= 0 are the
 * caller's to keep (not checked: other values make the memory diverge).
 * q, k [B, L, H|Hkv, Dk], v [B, L, Hkv, Dv] (H % Hkv == 0; query head h
 * reads k/v head h / (H / Hkv)), f32/bf16/f16; out [B, L, H, Dv] f32 or
 * q's dtype; states memory and momentum [N, H, Dk, Dv] f32 (N = B or
 * num_seqs). q and k are used as given (Titans L2-normalises them first).
 * Dk, Dv in 1..LA_MAX_HEAD_DIM. */
typedef struct {
    la_linear_form form;       /* chunked (default) or recurrent */
    int64_t chunk_size;        /* the gradient mini-batch, 1..1024 (default 64; 1 = per-token steps) */
    const int32_t *cu_seqlens; /* [num_seqs + 1] or NULL for a dense batch */
    int64_t num_seqs;
} la_titans_params;

LA_API la_titans_params la_titans_params_default(void);

/* out = the memory's reads over whole sequences. memory_in / momentum_in
 * NULL start from 0; memory_out / momentum_out NULL are not returned.
 * Errors as la_linear_attention_forward's (LA_ERR_ARGUMENT for
 * chunk_size < 1, LA_ERR_UNSUPPORTED above 1024). */
LA_API la_status la_titans_forward(la_context *ctx, const la_titans_params *p, const la_tensor *q, const la_tensor *k,
                                   const la_tensor *v, const la_tensor *eta, const la_tensor *theta,
                                   const la_tensor *alpha, const la_tensor *memory_in, const la_tensor *momentum_in,
                                   la_tensor *out, la_tensor *memory_out, la_tensor *momentum_out);

/* One token per sequence, a gradient step of its own (chunk_size 1: a
 * decode loop equals la_titans_forward with chunk_size 1, and continues a
 * prefill of any chunk size with per-token steps), memory and momentum
 * updated in place: q [B, H, Dk], k [B, Hkv, Dk], v [B, Hkv, Dv], eta,
 * theta, alpha [B, H] f32, memory and momentum [B, H, Dk, Dv] f32, out
 * [B, H, Dv]. p's form, chunk_size and cu_seqlens are unused (cu_seqlens
 * must be NULL). */
LA_API la_status la_titans_decode(la_context *ctx, const la_titans_params *p, const la_tensor *q, const la_tensor *k,
                                  const la_tensor *v, const la_tensor *eta, const la_tensor *theta,
                                  const la_tensor *alpha, la_tensor *memory, la_tensor *momentum, la_tensor *out);

/* Gradients of la_titans_forward (same params and chunk_size; p->form is
 * unused): chunk by chunk with chunk_size > 1 (the chunked form's matrix
 * products backwards), token by token through the recurrence with
 * chunk_size 1; the states recomputed from checkpoints every ~max(64,
 * sqrt(L)) tokens (a multiple of chunk_size), so the workspace grows as
 * sqrt(L) Dk Dv per thread. dout
 * like out; dmemory_out, dmomentum_out (NULL = 0) the gradients reaching
 * the final states; dq, dk, dv like q, k, v (f32 or their dtype); deta,
 * dtheta, dalpha like the gates (f32); dmemory_in, dmomentum_in like the
 * states (NULL: not wanted). Overwritten, not accumulated into. Errors as
 * the forward's. */
LA_API la_status la_titans_backward(la_context *ctx, const la_titans_params *p, const la_tensor *q, const la_tensor *k,
                                    const la_tensor *v, const la_tensor *eta, const la_tensor *theta,
                                    const la_tensor *alpha, const la_tensor *memory_in, const la_tensor *momentum_in,
                                    const la_tensor *dout, const la_tensor *dmemory_out,
                                    const la_tensor *dmomentum_out, la_tensor *dq, la_tensor *dk, la_tensor *dv,
                                    la_tensor *deta, la_tensor *dtheta, la_tensor *dalpha, la_tensor *dmemory_in,
                                    la_tensor *dmomentum_in);

/* ------------------------------------------------ block-sparse attention */

/* Which key blocks each query block computes, as CSR lists.
 *
 * Queries and keys of every sequence are cut into blocks of block_size
 * tokens from the sequence's start: query block qb holds rows
 * [qb * block_size, min((qb + 1) * block_size, Lq)), key block kb keys
 * [kb * block_size, min((kb + 1) * block_size, Lk)). Row
 *   r = (b * heads + h) * q_blocks + qb
 * (sequence b, query head h, query block qb) lists its key blocks in
 *   key_blocks[offsets[r] .. offsets[r + 1]),
 * strictly increasing (sorted, no duplicates), each in [0, ceil(Lk_b /
 * block_size)) for its sequence's Lk_b. offsets has num_seqs * heads *
 * q_blocks + 1 entries, offsets[0] = 0, non-decreasing. q_blocks is
 * ceil(Lq / block_size) (varlen: of the longest query sequence); the lists
 * of a query block past a shorter sequence's end are checked but unused
 * (its rows do not exist). With GQA every query head has its
 * own lists. The score rule of the call still applies inside listed
 * blocks: a key the rule hides stays hidden, a row whose lists hold no
 * visible key gets out 0 and lse -inf.
 *
 * Extra key columns ("vertical" patterns), optional: with col_offsets
 * non-NULL, row r also computes the individual keys
 *   key_cols[col_offsets[r] .. col_offsets[r + 1])
 * (key indices within the sequence, strictly increasing, each in
 * [0, Lk_b)), for every query of its block, exactly, forward and backward.
 * A column inside a block the row lists is computed once (the block's).
 * col_offsets has as many entries as offsets, col_offsets[0] = 0,
 * non-decreasing; key_cols may be NULL when it has no entries. With
 * col_offsets NULL, key_cols is ignored. The score rule applies to columns
 * as to blocks. */
typedef struct {
    int64_t block_size;  /* in [1, LA_SPARSE_BLOCK_MAX]; the selectors use LA_SPARSE_BLOCK_DEFAULT unless told */
    int64_t num_seqs;    /* B, or num_seqs of a varlen batch */
    int64_t heads;       /* H, the query heads */
    int64_t q_blocks;    /* ceil(Lq / block_size) */
    int64_t *offsets;    /* [num_seqs * heads * q_blocks + 1], 8-byte aligned */
    int32_t *key_blocks; /* [offsets[num_seqs * heads * q_blocks]], 4-byte aligned; may be NULL when empty */
    int64_t *col_offsets; /* NULL (no extra columns), or like offsets, for key_cols */
    int32_t *key_cols;    /* [col_offsets[rows]] key indices, 4-byte aligned; may be NULL when empty */
} la_block_index;

#define LA_SPARSE_BLOCK_DEFAULT 64
/* The largest block_size: block offsets stay far from int64 overflow. */
#define LA_SPARSE_BLOCK_MAX ((int64_t)1 << 30)

/* Check an index against a dense problem's sizes (B sequences of Lq
 * queries and Lk keys, H query heads) without running anything:
 * LA_ERR_NULL (index, offsets, or key_blocks with entries), LA_ERR_ARGUMENT
 * (block_size outside [1, LA_SPARSE_BLOCK_MAX], arrays misaligned, a row not strictly increasing:
 * unsorted or duplicated ids or columns), LA_ERR_SHAPE (num_seqs, heads or q_blocks
 * not those of the problem), LA_ERR_OVERFLOW (the row count or an offset
 * past what memory can hold), LA_ERR_SEQLENS (offsets[0] != 0, offsets
 * decreasing, a key-block id or key column out of range; the same for
 * col_offsets). The attention calls below run the same checks. */
LA_API la_status la_block_index_check(const la_block_index *index, int64_t B, int64_t H, int64_t Lq, int64_t Lk);

/* Free the arrays a selector allocated and zero the index (NULL-safe; only
 * for indexes the selectors below filled). */
LA_API void la_block_index_free(la_block_index *index);

/* Block-sparse attention: la_attention_forward with each query block
 * computing only the key blocks its list names (and, inside them, only
 * the keys the params' rule shows: causal, window, sinks; softcap, ALiBi,
 * softmax or sigmoid, GQA all as in the dense call). Arguments, shapes,
 * dtypes and every check as la_attention_forward, plus the index's
 * (la_block_index_check; varlen: key-block ids checked against each
 * sequence's own length). Outputs must not share memory with the index's
 * arrays (LA_ERR_ARGUMENT). With every visible block listed, out and lse
 * equal la_attention_forward's up to rounding. */
LA_API la_status la_block_sparse_forward(la_context *ctx, const la_attention_params *p, const la_tensor *q,
                                         const la_tensor *k, const la_tensor *v, const la_block_index *index,
                                         la_tensor *out, la_tensor *lse);

/* Gradients of la_block_sparse_forward with the same index (out and lse
 * are its results): la_attention_backward restricted to the listed blocks
 * and extra columns. dK and dV of keys no query lists are 0. Extra columns
 * cost a masked tile of up to 96 keys for each such piece that holds one
 * (the forward gathers them instead), so scattered columns are dear here. */
LA_API la_status la_block_sparse_backward(la_context *ctx, const la_attention_params *p, const la_tensor *q,
                                          const la_tensor *k, const la_tensor *v, const la_block_index *index,
                                          const la_tensor *out, const la_tensor *dout, const la_tensor *lse,
                                          la_tensor *dq, la_tensor *dk, la_tensor *dv);

/* ---- selectors: build an index from q and k ----
 * Each takes the params of the attention call it prepares (the rule's
 * causal / window / sinks decide which blocks could be visible; blocks the
 * rule hides entirely are never listed), dense q [B, Lq, H, D] and
 * k [B, Lk, Hkv, D] (f32, bf16 or f16, the same checks as the attention
 * calls), and fills *out with arrays it allocates (free with
 * la_block_index_free). Varlen batches (the params' cu_seqlens_q and
 * cu_seqlens_k with num_seqs, packed q [Tq, H, D] and k [Tk, Hkv, D]) run
 * sequence by sequence, in order, each exactly as a dense call on that
 * sequence alone; q_blocks is that of the longest query sequence and the
 * rows past a sequence's end are empty (LA_ERR_SEQLENS for bad
 * cu_seqlens).
 * Deterministic: the same inputs give the same index, whatever the
 * threads or SIMD level. On failure *out is zeroed and nothing leaks. */

/* Static patterns, from the shapes alone (q and k are not read):
 * the "A-shape" (sink blocks + a local window along the diagonal),
 * dilated blocks along the diagonal, and global blocks. */
typedef struct {
    int64_t block_size;    /* 0 = LA_SPARSE_BLOCK_DEFAULT */
    int64_t sink_blocks;   /* key blocks [0, sink_blocks) for every query block */
    int64_t local_blocks;  /* the diagonal's key blocks and local_blocks - 1 on each side (the rule
                            * drops those right of the diagonal when causal); 0 = none */
    int64_t stride;        /* > 0: also every stride-th key block counted back from the diagonal */
    int64_t global_blocks; /* query blocks [0, g) attend every key block, and every query block
                            * attends key blocks [0, g) */
} la_sparse_static;
/* sink_blocks 1, local_blocks 4, stride 0, global_blocks 0. */
LA_API la_sparse_static la_sparse_static_default(void);
/* Budgets: every count >= 0 and stride >= 0 (LA_ERR_ARGUMENT otherwise). */
LA_API la_status la_sparse_select_static(const la_sparse_static *opts, const la_attention_params *p,
                                         const la_tensor *q, const la_tensor *k, la_block_index *out);

/* Block top-k by coverage: per query block, the block-pooled (mean) query
 * against each key block's mean key, scored by the params' rule (scale,
 * softcap, ALiBi at the blocks' centres) plus log(keys in the block),
 * estimates each visible key block's share of the softmax mass; the sink
 * and local blocks are kept first, then blocks in order of that share
 * until a share gamma of the estimated mass is covered (top_k 0), or the
 * top_k blocks beside the forced ones (top_k > 0). Ties go to the lower
 * block id.
 * With probe_rows P > 0 the estimate is query-aware row by row instead:
 * P of the query block's rows, spread evenly (rows i0 + (r + 1) * n / P - 1
 * of its n rows, so the last row always), each an exact softmax row over
 * the keys under the rule, summed per key block (a block holding one
 * heavy key, a sink or a retrieved token, is seen; block means average it
 * away). The probes are masked as the block's last P rows would be, which
 * differs only inside the diagonal block and, under a sliding window, at
 * the window's left edge: key blocks there that only the block's earlier
 * rows see have no estimate and are kept as forced blocks (at most two per
 * query block, beside top_k). Costs about P / block_size of
 * the dense product q k^T (P = 4 at block 64: ~3% of dense attention's
 * FLOPs); no block means are computed. */
typedef struct {
    int64_t block_size;   /* 0 = LA_SPARSE_BLOCK_DEFAULT */
    float gamma;          /* coverage share in (0, 1] when top_k is 0 */
    int64_t top_k;        /* > 0: this many blocks beside the forced ones, instead of coverage */
    int64_t sink_blocks;  /* key blocks [0, sink_blocks) always kept */
    int64_t local_blocks; /* the diagonal block and local_blocks - 1 before it always kept */
    int64_t probe_rows;   /* 0: block means against key-block means; P > 0: P exact probe rows (above) */
} la_sparse_topk;
/* gamma 0.9, top_k 0, sink_blocks 1, local_blocks 1, probe_rows 0. */
LA_API la_sparse_topk la_sparse_topk_default(void);
/* Budgets: gamma in (0, 1] (when top_k is 0), top_k, sink_blocks,
 * local_blocks, probe_rows >= 0 (LA_ERR_ARGUMENT otherwise); softmax only
 * (sigmoid is LA_ERR_UNSUPPORTED). Runs on the context's threads. */
LA_API la_status la_sparse_select_topk(la_context *ctx, const la_sparse_topk *opts, const la_attention_params *p,
                                       const la_tensor *q, const la_tensor *k, la_block_index *out);
/* Block top-k with a coverage per query head (DuoAttention-style
 * streaming heads beside top-k heads): head h of each sequence covers
 * gamma[h] in [0, 1] of its estimated mass (opts->gamma unused, opts->top_k
 * must be 0), and gamma[h] = 0 makes it a streaming head: the lists
 * la_sparse_select_static gives under `stream` (whose block_size is unused:
 * opts' applies), no probes. Head h's lists equal la_sparse_select_topk's
 * at gamma[h] (static's at 0), but the probes pack each K/V head's keys
 * once for all its query heads. Dense batches only (varlen:
 * LA_ERR_UNSUPPORTED). Errors as
 * la_sparse_select_topk's, LA_ERR_NULL for gamma or stream NULL, and
 * LA_ERR_ARGUMENT for a gamma[h] outside [0, 1], top_k > 0, or a negative
 * budget in stream. */
LA_API la_status la_sparse_select_topk_heads(la_context *ctx, const la_sparse_topk *opts, const float *gamma,
                                             const la_sparse_static *stream, const la_attention_params *p,
                                             const la_tensor *q, const la_tensor *k, la_block_index *out);

/* Vertical-slash (after MInference), at block granularity: the last
 * `last_queries` query rows' exact softmax attention (per head, over the
 * keys the rule shows) scores every key column (its summed weight) and
 * every diagonal (the summed weight at distance diag_i - j); the top
 * `vertical` columns and top `slash` diagonals are kept, each query block
 * listing the key blocks that hold its kept columns and the keys its rows
 * meet along its kept diagonals. The first key block and the diagonals at
 * distance [0, block_size) (the local band) are always kept. Ties go to the
 * lower column or distance; columns and diagonals with no weight are not
 * kept. */
typedef struct {
    int64_t block_size;   /* 0 = LA_SPARSE_BLOCK_DEFAULT */
    int64_t last_queries; /* rows that estimate the pattern (the last ones): 0 = 64 */
    int64_t vertical;     /* key columns kept, per head */
    int64_t slash;        /* diagonals kept, per head */
    int columns;          /* nonzero: the kept columns as extra key columns of the index (exactly
                           * those keys, as MInference computes them) rather than the key blocks
                           * holding them; fewer keys computed, less mass covered */
} la_sparse_vslash;
/* last_queries 64, vertical 64, slash 64, columns 0. */
LA_API la_sparse_vslash la_sparse_vslash_default(void);
/* Budgets: last_queries, vertical, slash >= 0 (LA_ERR_ARGUMENT otherwise);
 * softmax only (sigmoid is LA_ERR_UNSUPPORTED). Runs on the context's
 * threads; the index does not depend on them. */
LA_API la_status la_sparse_select_vslash(la_context *ctx, const la_sparse_vslash *opts, const la_attention_params *p,
                                         const la_tensor *q, const la_tensor *k, la_block_index *out);

/* Routing (after the Routing Transformer): per query head, online
 * spherical k-means over the L2-normalised queries and keys of the call
 * (of every sequence of the batch) with one set of centroids shared by
 * queries and keys. Each call runs `iterations` rounds of: assign every
 * point to its nearest centroid (largest cosine), then move each centroid
 * to normalise(decay * c + (1 - decay) * normalised mean of its points)
 * (an exponential moving average; a centroid with no points stays). The
 * centroids live in a state the caller keeps across calls; a fresh state
 * takes its first centroids from the first call's points (distinct points
 * drawn by its seed). Clusters are balanced: per sequence, each centroid's
 * members are its `members` nearest queries and its `members` nearest
 * keys (top-w by cosine; ties to the lower index). Query block qb lists
 * every key block holding a key member of a cluster that one of qb's
 * queries belongs to, plus the sink blocks and the diagonal block with
 * local_blocks - 1 before it; blocks the rule hides are never listed. */
typedef struct la_sparse_routing_state la_sparse_routing_state;
typedef struct {
    int64_t block_size;   /* 0 = LA_SPARSE_BLOCK_DEFAULT */
    int64_t members;      /* top-w members per centroid per sequence: 0 = ceil(Lk / clusters) for keys,
                           * ceil(Lq / clusters) for queries */
    int64_t iterations;   /* k-means rounds this call (0: route with the centroids as they are) */
    float decay;          /* EMA weight of the old centroid, in [0, 1) */
    int64_t sink_blocks;  /* key blocks [0, sink_blocks) always listed */
    int64_t local_blocks; /* the diagonal block and local_blocks - 1 before it always listed */
} la_sparse_routing;
/* members 0, iterations 2, decay 0.9, sink_blocks 0, local_blocks 1. */
LA_API la_sparse_routing la_sparse_routing_default(void);
/* A state for `heads` query heads of head_dim dims and `clusters`
 * centroids each, seeded: LA_ERR_NULL (out), LA_ERR_ARGUMENT (heads,
 * head_dim or clusters < 1, or clusters > 65536), LA_ERR_OVERFLOW,
 * LA_ERR_NOMEM. Free with la_sparse_routing_state_free (NULL-safe). */
LA_API la_status la_sparse_routing_state_create(la_sparse_routing_state **out, int64_t heads, int64_t head_dim,
                                                int64_t clusters, uint64_t seed);
LA_API void la_sparse_routing_state_free(la_sparse_routing_state *state);
/* The k-means objective of the state's last call: values[t] (t <
 * iterations) is the mean over heads and points of 1 - cosine to the
 * nearest centroid before round t's update, values[iterations] after the
 * last. Fills min(n, iterations + 1) values and sets *count to
 * iterations + 1 (0 before any call). LA_ERR_NULL for state or count, or
 * values with n > 0; LA_ERR_ARGUMENT for n < 0. */
LA_API la_status la_sparse_routing_objective(const la_sparse_routing_state *state, double *values, int64_t n,
                                             int64_t *count);
/* Budgets: members, iterations (at most 1000), sink_blocks, local_blocks
 * >= 0, decay in [0, 1) (LA_ERR_ARGUMENT); the state's heads and head_dim must be q's
 * (LA_ERR_SHAPE). A varlen batch is one call per sequence with queries,
 * in order: the state moves through them, and its objective is the last
 * sequence's. Updates the state's centroids (on failure they are left
 * as they were). Deterministic for a seed and a sequence of calls, whatever
 * the threads. */
LA_API la_status la_sparse_select_routing(la_context *ctx, const la_sparse_routing *opts,
                                          la_sparse_routing_state *state, const la_attention_params *p,
                                          const la_tensor *q, const la_tensor *k, la_block_index *out);

/* Hierarchical pruning (after HiP attention), O(L log L): per query block,
 * the candidate key range (the key blocks up to the last one any of its
 * rows sees) is halved again and again; each round scores every half by
 * its representative, the largest rule score (scale, softcap, ALiBi at
 * the blocks' centres) of the block-pooled query against the mean key of
 * up to `probes` blocks spread evenly over the half, and keeps the top_k
 * halves (ties to the lower block), until every kept range is one block.
 * The sink blocks and the diagonal block with local_blocks - 1 before it
 * are listed besides; blocks the rule hides never are. */
typedef struct {
    int64_t block_size;   /* 0 = LA_SPARSE_BLOCK_DEFAULT */
    int64_t top_k;        /* key blocks the search keeps per query block, >= 1 */
    int64_t probes;       /* blocks probed per half: 0 = 4 */
    int64_t sink_blocks;  /* key blocks [0, sink_blocks) always listed */
    int64_t local_blocks; /* the diagonal block and local_blocks - 1 before it always listed */
} la_sparse_hip;
/* top_k 8, probes 4, sink_blocks 1, local_blocks 1. */
LA_API la_sparse_hip la_sparse_hip_default(void);
/* Budgets: top_k >= 1, probes, sink_blocks, local_blocks >= 0
 * (LA_ERR_ARGUMENT). Runs on the context's threads; the index does not
 * depend on them. */
LA_API la_status la_sparse_select_hip(la_context *ctx, const la_sparse_hip *opts, const la_attention_params *p,
                                      const la_tensor *q, const la_tensor *k, la_block_index *out);

/* Chunk selection per head (after LongHeads and landmark attention): keys
 * in chunks of chunk_blocks key blocks, each with a representative, its
 * mean key. Every query row scores each chunk it can see by the rule's
 * score of its own query against the representative (at the chunk's
 * centre for ALiBi) and picks its top_k chunks (ties to the lower chunk);
 * its query block lists every key block of the chunks any of its rows
 * picked, plus the first chunk and the local window (the diagonal block
 * and local_blocks - 1 before it); blocks the rule hides never. */
typedef struct {
    int64_t block_size;   /* 0 = LA_SPARSE_BLOCK_DEFAULT */
    int64_t chunk_blocks; /* key blocks per chunk, >= 1 */
    int64_t top_k;        /* chunks each row picks besides the first chunk and the window, >= 0 */
    int64_t local_blocks; /* the diagonal block and local_blocks - 1 before it always listed */
} la_sparse_chunks;
/* chunk_blocks 4, top_k 2, local_blocks 2. */
LA_API la_sparse_chunks la_sparse_chunks_default(void);
/* Budgets: chunk_blocks >= 1, top_k, local_blocks >= 0 (LA_ERR_ARGUMENT).
 * Runs on the context's threads; the index does not depend on them. */
LA_API la_status la_sparse_select_chunks(la_context *ctx, const la_sparse_chunks *opts, const la_attention_params *p,
                                         const la_tensor *q, const la_tensor *k, la_block_index *out);

/* FlexPrefill's per-head choice: for each (sequence, head), the last query
 * block's key-block distribution as block top-k estimates it (softmax of
 * the block-pooled query against the block means, as
 * la_sparse_select_topk scores them) against the true one (its rows' exact
 * softmax summed per key block, averaged over the rows). When the square
 * root of their Jensen-Shannon divergence (nats, in [0, sqrt(ln 2)]) is at
 * most tau the estimate is trusted and the head gets query-aware block
 * top-k by coverage gamma (with the sink and local blocks), exactly as
 * la_sparse_select_topk would list it; otherwise vertical-slash with the
 * vertical and slash budgets (last_queries 64, blocks), exactly as
 * la_sparse_select_vslash would. A head whose last block sees no key (NAN)
 * gets top-k. */
typedef struct {
    int64_t block_size;   /* 0 = LA_SPARSE_BLOCK_DEFAULT */
    float gamma;          /* coverage of query-aware heads, in (0, 1] */
    float tau;            /* divergence threshold, >= 0 */
    int64_t vertical;     /* columns kept by vertical-slash heads */
    int64_t slash;        /* diagonals kept by vertical-slash heads */
    int64_t sink_blocks;  /* query-aware heads: key blocks [0, sink_blocks) always kept */
    int64_t local_blocks; /* query-aware heads: the diagonal block and local_blocks - 1 before it */
} la_sparse_flex;
/* gamma 0.9, tau 0.1, vertical 64, slash 64, sink_blocks 1, local_blocks 1. */
LA_API la_sparse_flex la_sparse_flex_default(void);
/* Budgets: gamma in (0, 1], tau finite >= 0, the counts >= 0
 * (LA_ERR_ARGUMENT); softmax only (LA_ERR_UNSUPPORTED). divergence (NULL:
 * not wanted) receives [B * H] values, (b * H + h), only on success. Runs
 * on the context's threads; the index does not depend on them. */
LA_API la_status la_sparse_select_flex(la_context *ctx, const la_sparse_flex *opts, const la_attention_params *p,
                                       const la_tensor *q, const la_tensor *k, la_block_index *out,
                                       double *divergence);

/* One selector and one budget, as `--sparse SELECTOR:BUDGET[,OPTION=N...]`
 * names them (the model's prefill, tools): every option not named at its
 * default.
 *   static:N   sink block + local window of N blocks (local_blocks N >= 1)
 *   topk:G     G in (0, 1]: coverage gamma; G > 1 (an integer): top_k G
 *   vslash:N   N vertical columns and N diagonals (blocks)
 *   hip:N      top_k N >= 1
 *   chunks:N   top_k N chunks (of 4 blocks) per row
 *   flex:G     coverage gamma G in (0, 1] for query-aware heads
 *   routing:N  N clusters (at most 65536), from a fresh state (seed 0) at every call
 * Each N is a whole number in [1, 2^30] (0 is refused, where the selector's
 * own field would take it).
 * Options, each at most once, N a whole number:
 *   sink=N          the selector's sink_blocks (N >= 1; static, topk, hip,
 *                   flex, routing: the others have no such option)
 *   local=N         the selector's local_blocks (N >= 1; topk, hip, chunks,
 *                   flex, routing; static's budget is its window)
 *   probe=N         topk only: the selector's probe_rows (N >= 1): estimate
 *                   each block's mass from N exact softmax rows of the query
 *                   block, spread evenly, instead of block means
 *   dense-layers=N  model prefill only: layers [0, N) run dense attention
 *                   (N >= 0; a model's early layers attend diffusely);
 *                   N at or past the model's layer count makes every layer
 *                   dense (a session accepts it; longattn run, ppl and
 *                   eval refuse N past the model's layers, exit 2);
 *                   la_sparse_select ignores it
 * e.g. "topk:0.95,dense-layers=2,local=2".
 * LA_SPARSE_NONE: dense attention. Brace-initialised choices
 * ({kind, budget}) get every option at its default (the zero values). */
typedef enum {
    LA_SPARSE_NONE = 0,
    LA_SPARSE_STATIC,
    LA_SPARSE_TOPK,
    LA_SPARSE_VSLASH,
    LA_SPARSE_HIP,
    LA_SPARSE_CHUNKS,
    LA_SPARSE_FLEX,
    LA_SPARSE_ROUTING,
    LA_SPARSE_KIND_COUNT
} la_sparse_kind;
typedef struct {
    la_sparse_kind kind;
    double budget;
    int64_t sink_blocks;  /* 0: the selector's default; else >= 1 */
    int64_t local_blocks; /* 0: the selector's default; else >= 1 */
    int64_t dense_layers; /* model prefill: the first dense_layers layers dense, >= 0 */
    int64_t probe_rows;   /* topk: 0 (block means) or the selector's probe_rows >= 1 */
} la_sparse_choice;
/* Parse "none" or "SELECTOR:BUDGET[,OPTION=N...]" as above: LA_ERR_NULL,
 * or LA_ERR_ARGUMENT naming what is wrong (an unknown selector or option,
 * a budget or option value out of its range or not an integer where one
 * is needed, an option given twice or one the selector does not have). */
LA_API la_status la_sparse_choice_parse(const char *text, la_sparse_choice *out);
/* Check a choice built by hand as la_sparse_choice_parse checks a parsed
 * one: LA_ERR_NULL, or LA_ERR_ARGUMENT naming the kind, budget or option
 * out of its range (LA_SPARSE_NONE is valid: dense). */
LA_API la_status la_sparse_choice_validate(const la_sparse_choice *choice);
/* Run the chosen selector (la_sparse_select_* with the defaults, the
 * budget and the sink / local options as above) on q and k: the
 * selectors' arguments and errors; LA_ERR_ARGUMENT for LA_SPARSE_NONE, an
 * unknown kind, a budget or option out of range, or a sink / local option
 * the selector does not have. */
LA_API la_status la_sparse_select(la_context *ctx, const la_sparse_choice *choice, const la_attention_params *p,
                                  const la_tensor *q, const la_tensor *k, la_block_index *out);

/* How good an index is for a softmax call (dense q, k as the selectors):
 *  recall  mean over sampled query rows (of every sequence and head) of the
 *          share of the row's exact softmax mass (over every key the rule
 *          shows) that falls in its listed blocks; rows that see no key
 *          are left out; computed exactly, in double;
 *  density listed (sequence, head, query block, key block) pairs the rule
 *          does not hide entirely, over all pairs it does not hide: the
 *          share of the dense kernel's blocks the sparse kernel computes;
 *          each extra key column outside the listed blocks (that some row
 *          of its query block sees) counts 1 / block_size of a block.
 * Recall counts the extra columns' keys as covered.
 * Dense batches only (varlen: LA_ERR_UNSUPPORTED).
 * sample_rows > 0 samples that many (b, h, i) rows uniformly with
 * replacement from a generator seeded by `seed`; 0 takes every row. */
typedef struct {
    double recall, density;
    int64_t rows;          /* rows averaged into recall */
    int64_t listed, total; /* the density's counts */
    int64_t columns;       /* extra (query block, key column) pairs outside the listed blocks */
} la_sparse_quality;
LA_API la_status la_block_index_quality(la_context *ctx, const la_attention_params *p, const la_tensor *q,
                                        const la_tensor *k, const la_block_index *index, int64_t sample_rows,
                                        uint64_t seed, la_sparse_quality *out);

/* ------------------------------------------------------------ KV cache */

/* A paged K/V cache for decoding: per layer, per KV head and per sequence,
 * rows of head_dim elements in pages of page_size tokens, stored as f32,
 * bf16 or f16 (rows arrive as f32 and are rounded once, on append). Each
 * entry keeps the token position it was appended with, so RoPE'd keys stay
 * right after entries are dropped. Lengths may differ per (layer, KV head,
 * sequence): la_kv_cache_compact drops chosen entries of one head and
 * returns the pages left empty to the operating system, so ragged per-head
 * budgets free real memory.
 *
 * Storage: each (layer, K or V, KV head, sequence) owns a range of address
 * space reserved for max_tokens rows and committed page by page as it is
 * written; pages past a head's length are handed back (their bytes, rounded
 * in to whole OS pages). Views hand the pages to la_attention_decode as a
 * paged la_kv_layout: blocks are pages, block_size is page_size.
 *
 * Quantised pages (quant = LA_KV_Q8 or LA_KV_Q4, after KIVI, Liu et al.
 * 2024): unsigned codes with an f16 (scale, zero) pair per group,
 * x = zero + scale * code, zero the group's minimum and scale its range /
 * 255 (int8) or / 15 (int4). Keys are grouped per channel: each channel
 * of quant_key_group consecutive entries shares a pair (outlier channels
 * keep their own range). Values are grouped per token: each run of
 * quant_value_group channels of one entry shares a pair. The most recent
 * entries stay f32 in a window: an append lands there, and once it holds
 * quant_window + quant_key_group entries its oldest quant_key_group become
 * one quantised key group; so the last quant_window (up to quant_window +
 * quant_key_group - 1) entries are exact. Round trip: an entry read back
 * is within scale / 2 of what was appended, plus the f16 rounding of its
 * group's pair (2^-11 relative to the group's range and minimum). dtype is
 * not used by a quantised cache. la_kv_cache_decode reads the codes
 * directly; la_kv_cache_read dequantises; la_kv_cache_view is
 * LA_ERR_UNSUPPORTED (no tensor describes the pages).
 * Compaction of a quantised head keeps the groups before the first dropped
 * entry; after it, a run of quant_key_group kept entries that was one whole
 * group moves with its codes and scales untouched, any other run of
 * quantised entries is dequantised and quantised again (one more rounding
 * for those entries), and what remains goes back to the window. The
 * streaming policy drops whole key groups on a quantised cache, so it never
 * re-quantises (la_kv_cache_apply_policy). */
typedef struct la_kv_cache la_kv_cache;

typedef enum { LA_KV_QUANT_NONE = 0, LA_KV_Q4 = 4, LA_KV_Q8 = 8 } la_kv_quant;

#define LA_KV_QUANT_MAX_GROUP 256   /* largest quant_key_group */
#define LA_KV_QUANT_MAX_WINDOW 65536 /* largest quant_window */

typedef struct {
    int64_t n_layers;    /* > 0 */
    int64_t n_kv_heads;  /* > 0 */
    int64_t head_dim;    /* multiple of 8, at most LA_MAX_HEAD_DIM (decode's rule) */
    int64_t page_size;   /* tokens per page, > 0 */
    int64_t max_tokens;  /* entries per (layer, head, sequence), in [1, 2^31 - 1] */
    int64_t max_seqs;    /* sequences, > 0 */
    la_dtype dtype;      /* LA_F32, LA_BF16 or LA_F16 (float pages) */
    la_kv_quant quant;   /* LA_KV_QUANT_NONE: float pages of dtype; LA_KV_Q8 / LA_KV_Q4: quantised */
    int64_t quant_key_group;   /* entries per key group: in [1, 256], divides page_size */
    int64_t quant_value_group; /* channels per value group: divides head_dim */
    int64_t quant_window;      /* recent entries kept f32, in [0, 65536] */
    /* Quantised pages only: false (default), la_kv_cache_decode rounds the
     * query, scaled per key channel, to int8 once per (query row, key
     * group) with one f32 scale per row and group (as llama.cpp rounds Q
     * to q8_0 for its quantised-K dot products) where the CPU has
     * AVX512-VNNI and AVX512-VBMI and the format suits its passes
     * (head_dim, quant_value_group and quant_key_group multiples of 16,
     * at most 16 value groups a row; elsewhere the queries stay f32, as
     * with true), and takes q.k as integer dot products
     * with the codes: a score moves by at most D * n * max_d |q_d s_d| /
     * 508 (q scaled by the softmax scale, s_d the channel's scale, n 255
     * for int8 and 15 for int4; the rounding's mean over the codes is
     * added back). On int8 pages it also rounds the softmax weights
     * times the value scales to 8 bits per (query row, value group, 256
     * slots) with one f32 scale (max / 255) and takes P.V as integer dot
     * products with the codes: an output moves by at most 256 times half
     * its value group's spread / 510 per 256 slots, weighted as those
     * slots' largest weight (the rounding's mean over the codes is added
     * back). SmolLM2-135M, perplexity through single-token decode
     * (bench/kvq_ppl_step.c, ctx 512): q8 +0.02% over f16 pages (f32
     * queries and weights +0.06%), q4 +1.0% (+0.4%). true: f32 queries
     * and weights (the same bits on every CPU at a given SIMD level), for comparing
     * policies or quantisation without that noise (the model's
     * exact_decode sets it). */
    bool quant_exact_queries;
} la_kv_cache_params;

/* 1 layer, 1 KV head, head_dim 64, page_size 256, max_tokens 4096, 1
 * sequence, f16 (llama.cpp's default cache type); not quantised, and for
 * quantised pages key and value groups of 32 and a window of 32 (KIVI's
 * group size). */
LA_API la_kv_cache_params la_kv_cache_params_default(void);

/* *out is NULL after any failure. Errors: LA_ERR_NULL, LA_ERR_SHAPE (a
 * size <= 0, head_dim not a multiple of 8 or above 512), LA_ERR_DTYPE,
 * LA_ERR_ARGUMENT (quant not a la_kv_quant; with quant, a group size <= 0
 * or not dividing page_size / head_dim, a key group above 256, a window
 * outside [0, 65536]),
 * LA_ERR_OVERFLOW (max_tokens beyond 2^31 - 1: lengths are int32; max_seqs
 * x pages per sequence beyond int32 block ids; the bytes of a page or of a
 * layer beyond size_t), LA_ERR_NOMEM (also, before any allocation, for a
 * cache whose address space, every layer's K and V pages, exceeds the 2^47
 * bytes a process can map).
 *
 * Memory: the whole cache is reserved as address space; OS pages are
 * committed as appends reach them and given back when entries leave.
 * Where one (layer, head, sequence) holds 2 MB or more (max_tokens x
 * page bytes), its pages sit on 2 MB transparent huge pages where the OS
 * offers them (fewer TLB misses when a decode streams the cache), and
 * memory then grows and shrinks in 2 MB steps: up to 2 MB per region
 * beyond la_kv_cache_bytes. */
LA_API la_status la_kv_cache_create(const la_kv_cache_params *p, la_kv_cache **out);
LA_API void la_kv_cache_destroy(la_kv_cache *c);
/* The parameters the cache was created with (NULL for NULL). */
LA_API const la_kv_cache_params *la_kv_cache_params_of(const la_kv_cache *c);

/* Append n rows to every KV head of one layer and sequence: k and v are
 * f32 [n, n_kv_heads, head_dim] row-major, positions [n] int32 (the tokens'
 * positions, kept with the entries). Each head's rows go after that head's
 * own last entry. Errors: LA_ERR_NULL, LA_ERR_ARGUMENT (layer or seq out of
 * range, n < 0, a head without room for n more), LA_ERR_NOMEM (the system
 * refused to commit a page). Nothing is written on failure. */
LA_API la_status la_kv_cache_append(la_kv_cache *c, int64_t layer, int64_t seq, int64_t n, const float *k,
                                    const float *v, const int32_t *positions);

/* Entries held by (layer, head, seq); -1 for an argument out of range. */
LA_API int64_t la_kv_cache_len(const la_kv_cache *c, int64_t layer, int64_t head, int64_t seq);
/* The positions of those entries, in slot order (valid until the next
 * append, compaction or reset of that head). */
LA_API la_status la_kv_cache_positions(const la_kv_cache *c, int64_t layer, int64_t head, int64_t seq,
                                       const int32_t **positions, int64_t *len);

/* Read entries [first, first + n) of one sequence back as f32: head >= 0
 * writes that head's rows to k/v [n, head_dim]; head = -1 writes every
 * head, [n, n_kv_heads, head_dim] (the heads must then hold first + n
 * entries each). k or v may be NULL. LA_ERR_ARGUMENT for a range or index
 * outside what the cache holds. */
LA_API la_status la_kv_cache_read(const la_kv_cache *c, int64_t layer, int64_t head, int64_t seq, int64_t first,
                                  int64_t n, float *k, float *v);

/* What la_attention_decode reads: k and v are [blocks, page_size, heads,
 * head_dim] in the cache's dtype, layout holds seqlens_k and block_table
 * for the n_seqs sequences from seq0. */
typedef struct {
    la_tensor k, v;
    la_kv_layout layout;
} la_kv_view;

/* A view of one layer's pages for sequences [seq0, seq0 + n_seqs): head >= 0
 * views that KV head alone (heads dim 1; call decode with that head's query
 * heads), head = -1 all KV heads at once, which needs every head of the
 * layer to hold the same number of entries per sequence (LA_ERR_ARGUMENT
 * naming the ragged head otherwise). The view points into the cache: valid
 * until the next append, compaction or reset. */
LA_API la_status la_kv_cache_view(const la_kv_cache *c, int64_t layer, int64_t head, int64_t seq0, int64_t n_seqs,
                                  la_kv_view *out);

/* Decode attention over one layer of the cache for sequences [seq0, seq0 +
 * B): q [B, Lq, H, D] f32 (H a multiple of n_kv_heads), out like q (f32,
 * bf16 or f16: computed in f32, each element rounded once), lse [B, Lq, H]
 * f32 or NULL. Query head h reads KV head
 * h / (H / n_kv_heads). Float pages: la_attention_decode over
 * la_kv_cache_view(layer, -1, ...), or, when the heads hold different
 * numbers of entries, over each head's view with its query heads' slices
 * of q, out and lse (the same arithmetic per row), with any score rule
 * la_attention_decode takes. Quantised pages: the codes are
 * read in place (query scaled per key channel group, and rounded to int8
 * unless the cache has quant_exact_queries; values dequantised a block of
 * tokens at a time), each head over its own entries (ragged
 * heads allowed), with keys split at the same fixed 256-entry boundaries
 * as la_attention_decode; the rule may set scale and causal only
 * (LA_ERR_UNSUPPORTED otherwise). Errors as la_attention_decode's, and
 * LA_ERR_ARGUMENT for a layer or a sequence in [seq0, seq0 + B) outside
 * the cache. */
LA_API la_status la_kv_cache_decode(la_context *ctx, const la_attention_params *p, const la_kv_cache *c, int64_t layer,
                                    int64_t seq0, const la_tensor *q, la_tensor *out, la_tensor *lse);

/* Drop entries of one (layer, head, seq): slots [n_drop] strictly
 * increasing indices below the head's length. The kept entries move down
 * in order with their positions; pages left empty are freed. Errors:
 * LA_ERR_NULL, LA_ERR_ARGUMENT (index out of range, slots not increasing);
 * nothing changes on failure. */
LA_API la_status la_kv_cache_compact(la_kv_cache *c, int64_t layer, int64_t head, int64_t seq, const int32_t *slots,
                                     int64_t n_drop);

/* Forget every entry of sequence seq (-1: all sequences), freeing its pages. */
LA_API la_status la_kv_cache_reset(la_kv_cache *c, int64_t seq);

/* Bytes of K and V pages in use: every (layer, head, sequence) counts
 * ceil(len / page_size) pages of page_size x head_dim elements, for K and
 * for V. Quantised: ceil(quantised entries / page_size) pages of codes
 * with their scales and zeros (K: page_size x head_dim codes plus
 * 2 x head_dim f16 per key group; V: the codes plus 2 x head_dim /
 * quant_value_group f16 per entry), plus, for a head holding any entry,
 * its whole f32 window (quant_window + 2 x quant_key_group rows, K and V).
 * Positions (4 bytes an entry) are not included. 0 for NULL. */
LA_API size_t la_kv_cache_bytes(const la_kv_cache *c);

/* KV-cache policies over la_kv_cache, applied per layer and KV head.
 * Eviction policies drop entries by compaction (so their memory is really
 * freed, and heads of one layer may hold different numbers of entries);
 * Quest evicts nothing and reads few pages instead. Every policy is named
 * by a string, "NAME" or "NAME:BUDGET[:OPTION=VALUE]...", BUDGET the
 * entries kept per (layer, KV head, sequence), an integer in [1, 2^30]:
 *  - "full": keep everything.
 *  - "streaming:BUDGET" (StreamingLLM, Xiao et al. 2023): keep the first
 *    `sinks` entries (attention sinks, option sinks=, default
 *    LA_KV_STREAMING_SINKS) and the most recent BUDGET - sinks; BUDGET >
 *    sinks. On a quantised cache it drops whole key groups from the first
 *    group boundary at or after the sinks (so the sinks round up to a key
 *    group, and a head holds up to BUDGET + quant_key_group - 1 entries):
 *    no group is re-quantised.
 *  - "h2o:BUDGET" (H2O, Zhang et al. 2023): every entry accumulates the
 *    attention it receives (la_kv_attention_mass: softmax probabilities
 *    summed over the query heads of its KV head and over every query that saw
 *    it); a head over budget keeps its `recent` newest entries (option
 *    recent=, default BUDGET / 2, < BUDGET) and the BUDGET - recent others
 *    with the largest accumulated mass (ties: the earlier entry). Evicts
 *    after every la_kv_policy_update: each single-token decode step drops one
 *    entry (the paper's per-step eviction: in generation a head holds exactly
 *    BUDGET entries); a multi-token call (a prefill chunk, up to 512 tokens
 *    in a session) appends, scores, then drops to BUDGET (at most BUDGET +
 *    chunk entries between append and eviction). Option decode=grow
 *    (field decode_grow; default decode=evict) makes single-token steps
 *    after a prompt's end (la_kv_policy_end_prompt, until the next
 *    multi-token call) only score: the cache grows by a token per step, as
 *    SnapKV's, and the prompt's selection stands through the reply; a
 *    single-token call before the prompt's end is a piece of the prompt
 *    and evicts.
 *    Option snap=F (field snap, in [0, 1), default 0) gives S =
 *    floor(F x BUDGET) entries to votes: a prompt's chunks then only
 *    score, and at la_kv_policy_end_prompt a head keeps its R = max(recent,
 *    W) newest entries, the S older ones the prompt's last W queries vote
 *    for (as SnapKV's; options window=, kernel=, pool=, accepted only with
 *    snap), pinned so that later decode steps never drop them (the next
 *    prompt's end votes anew), and the BUDGET - R - S others with the
 *    largest accumulated mass; R + S <= BUDGET.
 *  - "snapkv:BUDGET" (SnapKV, Li et al. 2024): after the whole prompt
 *    (la_kv_policy_end_prompt; prefill chunks before it evict nothing, so
 *    a question at the prompt's end votes), the prompt's last
 *    W = min(window, prompt) queries
 *    (option window=, default LA_KV_SNAPKV_WINDOW, < BUDGET) vote: each
 *    entry's attention mass from them (as H2O's), pooled over neighbouring
 *    entries (option kernel=, odd, default LA_KV_SNAPKV_KERNEL; option
 *    pool=max (default) or pool=avg, same-size windows clipped at the
 *    ends); a head over budget keeps the R = max(W, recent) newest entries
 *    (option recent=, default 0, < BUDGET: a recent window beside the
 *    votes, as H2O keeps) and the BUDGET - R best-voted others (ties: the
 *    earlier). Single-token steps
 *    evict nothing: the cache grows by one entry a token after the prefill,
 *    as in the paper. Option adapt=F (field adapt, in [0, 1], default 0:
 *    every head keeps BUDGET) shares the layer's voted entries between
 *    its KV heads, as Ada-KV (Feng et al. 2024): each head keeps its
 *    best-voted floor((1 - F) x (BUDGET - R)), and the layer's remaining
 *    F share goes to the best votes of any head (votes are comparable
 *    across heads: each window query's softmax sums to 1), so heads whose
 *    attention is concentrated give entries to diffuse ones; the layer
 *    holds at most n_kv_heads x BUDGET entries (its heads ragged, so up to
 *    a partial page per head beyond an even split's pages; counts are not
 *    rounded to pages: that starved heads when BUDGET < page_size).
 *    Option carry=G (field carry, in [0, 1], default 0: every selection
 *    ranks by its own prompt's votes alone) carries votes across prompts:
 *    each entry keeps a running vote A, at every prompt's end A = G x A +
 *    this prompt's pooled vote (new entries start at 0), and a head over
 *    budget keeps its R newest and the best by A; a prompt fed in many
 *    pieces that are each a prompt (a perplexity run's batches) then
 *    keeps what many windows voted for, with votes G^k old weighed G^k.
 *    The first prompt's selection is plain SnapKV's. Not with adapt=.
 *    Option pyramid=F (field pyramid, in (-1, 1), default 0) gives the
 *    layers budgets on a line, as PyramidKV (Cai et al. 2024): layer l of
 *    L keeps BUDGET x (1 + F x (L - 1 - 2l) / (L - 1)), F > 0 giving the
 *    lower layers more; round(BUDGET x (1 - |F|)) must exceed max(window,
 *    recent). Options share=S (in [0, 1), default 0) and file=FILE (a duo
 *    score file, as duo's; not with pyramid=) give layer l L x BUDGET x
 *    ((1 - S) / L + S x w_l / sum of w), w_l the sum of its KV heads'
 *    scores (negative ones count 0): layers with retrieval heads keep
 *    more; floor((1 - S) x BUDGET) must exceed max(window, recent); the
 *    file is read when the policy state is created. Both keep the total,
 *    L x BUDGET, rounded to whole pages (largest remainders), so the
 *    layers hold no more pages than an even split (each budget floored
 *    instead where a page-rounded one would not exceed max(window, recent)).
 *  - "quest:BUDGET" (Quest, Tang et al. 2024): nothing is evicted. Each
 *    full page of the cache keeps per-channel min and max of its keys; a
 *    single-token query bounds a page's scores by sum_d max(q_d min_d,
 *    q_d max_d), takes the max of that bound over the query heads of the KV
 *    head, and attends only the best ceil(BUDGET / page_size) - 1 full
 *    pages (ties: the earlier page) plus the last (current)
 *    page, through decode over a block table of just those pages, so it
 *    reads only their bytes. On q8/q4 pages the bounds are taken from
 *    the dequantised keys (what decode reads; a page with rows still in
 *    the f32 window is bounded again once they are quantised) and the
 *    picked pages are read back dequantised into a scratch of at most
 *    ceil(BUDGET / page_size) pages and attended in f32: the whole cache is
 *    never copied. Prefill chunks attend the whole cache. Page
 *    granularity is the cache's page_size; a session (longattn_model.h)
 *    creates its cache with pages of option page= tokens (default
 *    LA_KV_QUEST_PAGE, as Quest; page=0 keeps the session's
 *    kv_page_size). BUDGET >= 1.
 *  - "duo:BUDGET[:FILE]" (DuoAttention-style, Xiao et al. 2024): the
 *    `retrieval` share (option share=, in [0, 1], default 0.5) of all
 *    (layer, KV head) pairs with the highest scores in FILE (option file=
 *    or a last field without '='; default LA_KV_DUO_SCORES_DEFAULT) keep
 *    the full cache; the others are streaming heads, `sinks` + recent
 *    window within BUDGET > sinks. FILE is la_duo_calibrate's output
 *    (include/longattn_model.h; `longattn calibrate-duo`), read when the
 *    policy state is created (la_kv_policy_state_create):
 *        longattn-duo-scores 1 LAYERS KV_HEADS
 *        then LAYERS lines of KV_HEADS numbers (layer l's heads in order);
 *        lines starting with '#' are comments.
 * Options are accepted only by the policies named above; each at most once. */
typedef enum {
    LA_KV_POLICY_FULL = 0,
    LA_KV_POLICY_STREAMING = 1,
    LA_KV_POLICY_H2O = 2,
    LA_KV_POLICY_SNAPKV = 3,
    LA_KV_POLICY_QUEST = 4,
    LA_KV_POLICY_DUO = 5,
} la_kv_policy_kind;

#define LA_KV_STREAMING_SINKS 4
#define LA_KV_SNAPKV_WINDOW 32
#define LA_KV_SNAPKV_KERNEL 7
#define LA_KV_QUEST_PAGE 16
#define LA_KV_POLICY_PATH_MAX 512
#define LA_KV_DUO_SCORES_DEFAULT "duo-scores.txt"

typedef struct {
    la_kv_policy_kind kind;
    int64_t budget;   /* entries kept per (layer, head, sequence); 0 for full. Fields a kind does not take are 0 */
    int64_t sinks;    /* streaming, duo (streaming heads): first entries always kept */
    int64_t recent;   /* h2o, snapkv: newest entries always kept */
    int64_t window;   /* snapkv: observation window */
    int64_t kernel;   /* snapkv: pooling kernel, odd, >= 1 */
    int pool_avg;     /* snapkv: 0 max pooling, 1 average pooling */
    int64_t page;     /* quest: page size a session gives its cache; 0: the session's kv_page_size */
    double share;     /* duo: share of (layer, KV head) pairs kept full; snapkv: share of budget by file's layer scores */
    double snap;      /* h2o: share of the budget pinned by a prompt's votes (snap=), in [0, 1) */
    int decode_grow;  /* h2o: 1 = single-token steps evict nothing (decode=grow), 0 = they do (decode=evict) */
    double adapt;     /* snapkv: share of a layer's voted entries given out across its heads by vote (adapt=), [0, 1] */
    char file[LA_KV_POLICY_PATH_MAX]; /* duo, snapkv with share: score file */
    double carry;     /* snapkv: weight of earlier prompts' votes in each entry's ranking (carry=), [0, 1] */
    double pyramid;   /* snapkv: per-layer budget slope (pyramid=), (-1, 1): layer 0 (1 + F) x BUDGET, last (1 - F) x */
} la_kv_policy;

/* Parse a policy string (above). LA_ERR_NULL; LA_ERR_ARGUMENT naming what
 * is wrong (an unknown policy, a missing, malformed or out-of-range budget
 * or option) and listing the known policies. */
LA_API la_status la_kv_policy_parse(const char *text, la_kv_policy *out);
/* The checks la_kv_policy_parse makes, on a policy built by hand: kind
 * known, budget and options in range, and every field the kind does not
 * take 0 (file: empty), as la_kv_policy_parse leaves it, so the two accept
 * the same policies (full with a budget, or a snap on streaming, is
 * LA_ERR_ARGUMENT naming the field, not ignored). Fields taken: streaming
 * budget, sinks; h2o budget, recent, snap, decode_grow, and window,
 * kernel, pool_avg with snap > 0; snapkv budget, recent, window, kernel,
 * pool_avg, adapt, carry, pyramid, share, and file with share > 0; quest
 * budget, page; duo budget, sinks, share, file; full none. LA_ERR_NULL or
 * LA_ERR_ARGUMENT. */
LA_API la_status la_kv_policy_validate(const la_kv_policy *p);
/* Whether the policy needs a la_kv_policy_state (h2o, snapkv, quest,
 * duo); full and streaming work through la_kv_cache_apply_policy alone. */
LA_API bool la_kv_policy_has_state(const la_kv_policy *p);

/* Apply a stateless policy (full, streaming) to every KV head of (layer,
 * seq): entries beyond the budget are dropped with la_kv_cache_compact.
 * Full does nothing; a policy that needs state is LA_ERR_ARGUMENT. */
LA_API la_status la_kv_cache_apply_policy(la_kv_cache *c, const la_kv_policy *p, int64_t layer, int64_t seq);

/* Attention mass per cached entry: for KV head `head` of (layer, seq)
 * holding len entries, and n queries that are the tokens of its last n
 * entries (causal, bottom-right aligned: query i sees slots [0, len - n +
 * i]), mass[j] = sum over queries i and their `group` query heads g of
 * exp(scale * q_ig . k_j - lse_ig), the softmax probability entry j got
 * (0 from queries that do not see it). q row (i, g) is at q + i * q_stride
 * + g * head_dim (f32, after RoPE, as the keys); lse [i * lse_stride + g]
 * is the log-sum-exp the attention returned for that row (la_attention_
 * forward or _decode over this head's entries) or NULL to compute it here.
 * scale 0 means 1/sqrt(head_dim). Keys are read as f32 (the values decode
 * reads); scores in double, each exp in f32 (relative error < 3e-7; a
 * probability under 1.6e-38 counts as that), sums in double. mass [len] f32 is overwritten. ctx (may be NULL)
 * gives the threads. Errors: LA_ERR_NULL, LA_ERR_ARGUMENT (indices, n
 * outside [1, len], group outside [1, 2^31), q_stride < group * head_dim,
 * lse_stride < group, a stride of 2^60 / n or more), LA_ERR_NOMEM. */
LA_API la_status la_kv_attention_mass(la_context *ctx, const la_kv_cache *c, int64_t layer, int64_t head, int64_t seq,
                                      const float *q, int64_t n, int64_t group, int64_t q_stride, float scale,
                                      const float *lse, int64_t lse_stride, float *mass);

/* What a stateful policy keeps beside the cache: per-entry accumulated
 * attention (h2o), per-page key bounds (quest), the retrieval heads (duo),
 * scratch. One state per cache: attend, update and end_prompt refuse a
 * cache whose parameters differ from those of the cache the state was made
 * for (LA_ERR_ARGUMENT); sequence 0 only for h2o, snapkv, quest and duo
 * (LA_ERR_UNSUPPORTED for a cache of more sequences). */
typedef struct la_kv_policy_state la_kv_policy_state;

/* *out is NULL after any failure. Errors: LA_ERR_NULL, LA_ERR_ARGUMENT (an
 * invalid policy, or one without state), LA_ERR_UNSUPPORTED (max_seqs > 1),
 * LA_ERR_FORMAT / LA_ERR_IO (a duo score file that is missing, malformed
 * or for other dimensions; the message says how to make one), LA_ERR_NOMEM. */
LA_API la_status la_kv_policy_state_create(const la_kv_policy *p, const la_kv_cache *c, la_kv_policy_state **out);
LA_API void la_kv_policy_state_destroy(la_kv_policy_state *s);
/* Forget per-entry scores and page bounds (after la_kv_cache_reset). */
LA_API void la_kv_policy_state_reset(la_kv_policy_state *s);
/* Attention of n new queries (the tokens of the last n entries of every KV
 * head of (layer, 0)) over the cache under the policy: q [n, n_heads,
 * head_dim] f32, out the same shape; n_heads a multiple of n_kv_heads,
 * below 2^31 x n_kv_heads, and n at most every head's length
 * (LA_ERR_ARGUMENT otherwise; the same rules in la_kv_policy_update)
 * (query head h reads KV head h / (n_heads / n_kv_heads)); causal, with
 * p's scale and softcap (a window, sinks, ALiBi, sigmoid scores or varlen
 * offsets are LA_ERR_UNSUPPORTED: update scores plain softmax). One query
 * runs la_attention_decode (over the pages Quest picks; over each head's
 * own pages when lengths are ragged), more la_attention_forward over the
 * entries read back as f32, head by head when ragged. When every head
 * holds the same entries and Quest picks all pages, this is exactly the
 * call a full cache makes. The rows' log-sum-exp are kept for
 * la_kv_policy_update. */
LA_API la_status la_kv_policy_attend(la_kv_policy_state *s, la_context *ctx, const la_attention_params *p,
                                     la_kv_cache *c, int64_t layer, const float *q, int64_t n, int64_t n_heads,
                                     float *out);
/* After la_kv_policy_attend of the same queries: score the entries (h2o,
 * snapkv: plain softmax at this scale, normalised by the kept log-sum-exp
 * when the attend's rule was that too, i.e. no softcap and the same scale;
 * else computed afresh) and evict what the policy drops from
 * every KV head of (layer, 0). Quest and duo's retrieval heads keep all.
 * scale as la_kv_attention_mass's (0: 1/sqrt(head_dim)); one that is not
 * finite is LA_ERR_ARGUMENT, for every policy. */
LA_API la_status la_kv_policy_update(la_kv_policy_state *s, la_context *ctx, la_kv_cache *c, int64_t layer,
                                     const float *q, int64_t n, int64_t n_heads, float scale);
/* The prompt fed to (layer, 0) through la_kv_policy_attend / _update, in
 * one or more chunks, is complete: snapkv selects now, its observation
 * window being the prompt's last `window` queries (kept across chunks);
 * h2o with decode=grow takes later single-token calls as decode steps.
 * Other policies: nothing. A session calls it after the last chunk of
 * every multi-token la_session_eval. Errors: LA_ERR_NULL, LA_ERR_ARGUMENT
 * (another cache, layer out of range), LA_ERR_NOMEM. */
LA_API la_status la_kv_policy_end_prompt(la_kv_policy_state *s, la_context *ctx, la_kv_cache *c, int64_t layer);
/* The accumulated mass of (layer, head)'s entries in slot order (h2o, or
 * any policy state made with la_kv_policy_state_create for h2o with a
 * budget that keeps everything: a calibration's probe). *scores is valid
 * until the next update or reset; NULL with *len 0 for other policies. */
LA_API la_status la_kv_policy_state_scores(const la_kv_policy_state *s, int64_t layer, int64_t head,
                                           const float **scores, int64_t *len);
/* duo: whether (layer, head) is a retrieval head (keeps the full cache);
 * false for other policies or indices out of range. */
LA_API bool la_kv_policy_state_is_retrieval(const la_kv_policy_state *s, int64_t layer, int64_t head);

/* ------------------------------------------------------ weight formats */

/* GGUF files (versions 2 and 3): memory-mapped, every field validated
 * before use. Tensors point into the mapping; nothing is copied. */
/* Metadata value types, numbered as in the file. */
typedef enum {
    LA_GGUF_U8 = 0, LA_GGUF_I8 = 1, LA_GGUF_U16 = 2, LA_GGUF_I16 = 3, LA_GGUF_U32 = 4, LA_GGUF_I32 = 5,
    LA_GGUF_F32 = 6, LA_GGUF_BOOL = 7, LA_GGUF_STRING = 8, LA_GGUF_ARRAY = 9, LA_GGUF_U64 = 10,
    LA_GGUF_I64 = 11, LA_GGUF_F64 = 12, LA_GGUF_TYPE_COUNT
} la_gguf_type;

/* Tensor element types, numbered as ggml numbers them. */
typedef enum {
    LA_GGML_F32 = 0, LA_GGML_F16 = 1, LA_GGML_Q4_0 = 2, LA_GGML_Q4_1 = 3, LA_GGML_Q8_0 = 8,
    LA_GGML_Q4_K = 12, LA_GGML_Q6_K = 14, LA_GGML_BF16 = 30
} la_ggml_type;

typedef struct {
    const char *data;   /* points into the file; NOT NUL-terminated */
    uint64_t len;
} la_gguf_str;

typedef struct {
    la_gguf_str key;
    la_gguf_type type;
    la_gguf_type elem_type;  /* arrays only */
    uint64_t count;          /* arrays: element count; scalars: 1 */
    const void *value;       /* scalar value, string record, or first array element, in the file */
} la_gguf_kv;

typedef struct {
    char name[64];           /* NUL-terminated copy */
    int n_dims;
    int64_t ne[4];           /* ne[0] innermost; unused dims are 1 */
    la_ggml_type type;
    uint64_t offset;         /* relative to the data section */
    size_t nbytes;
    const void *data;        /* inside the mapping */
} la_gguf_tensor;

typedef struct la_gguf la_gguf;

LA_API la_status la_gguf_open(const char *path, la_gguf **out);
/* Parse a buffer the caller keeps alive (tests, embedded files). */
LA_API la_status la_gguf_open_memory(const void *data, size_t size, la_gguf **out);
LA_API void la_gguf_close(la_gguf *g);

LA_API uint32_t la_gguf_version(const la_gguf *g);
LA_API int64_t la_gguf_kv_count(const la_gguf *g);
LA_API const la_gguf_kv *la_gguf_kv_at(const la_gguf *g, int64_t i);
LA_API const la_gguf_kv *la_gguf_find(const la_gguf *g, const char *key); /* NULL if absent */

/* Typed getters: LA_ERR_NULL for g, key or out NULL (and the array
 * getters' kv or out); LA_ERR_FORMAT naming the key if absent or of a type
 * that does not convert (any integer type converts to another if in range;
 * la_gguf_get_f32 takes f32, f64 within f32's range, and integers). */
LA_API la_status la_gguf_get_int(const la_gguf *g, const char *key, int64_t *out);
LA_API la_status la_gguf_get_f32(const la_gguf *g, const char *key, float *out);   /* f32 or f64 */
LA_API la_status la_gguf_get_str(const la_gguf *g, const char *key, la_gguf_str *out);
/* Element i of an array of strings / numbers. */
LA_API la_status la_gguf_array_str(const la_gguf_kv *kv, uint64_t i, la_gguf_str *out);
/* Walk an array of strings in order: start with kv->value, each call fills
 * *out and returns the cursor of the next element (O(1) per element); a
 * NULL cursor or out gives NULL. */
LA_API const void *la_gguf_array_str_next(const void *cursor, la_gguf_str *out);
LA_API la_status la_gguf_array_f32(const la_gguf_kv *kv, uint64_t i, float *out);
LA_API la_status la_gguf_array_int(const la_gguf_kv *kv, uint64_t i, int64_t *out);

LA_API int64_t la_gguf_tensor_count(const la_gguf *g);
LA_API const la_gguf_tensor *la_gguf_tensor_at(const la_gguf *g, int64_t i);
LA_API const la_gguf_tensor *la_gguf_tensor_find(const la_gguf *g, const char *name); /* NULL if absent */

/* The ggml element types: block traits and the dequantisers that define
 * each format (rows of the same format table as la_dtype's; each block
 * layout is a struct whose size is checked when the library compiles), and
 * products with f32 activations (what a model's linear layers need) on
 * the CPU kernels the context's SIMD level picks. Rows are blocks back to
 * back and may start at any address: no alignment is needed. The f32
 * activations and outputs (x, X, y, Y) must be aligned to 4 bytes, as any
 * float array (LA_ERR_ARGUMENT otherwise). */
LA_API bool la_ggml_type_known(la_ggml_type t);          /* one of la_ggml_type's values */
LA_API const char *la_ggml_type_name(la_ggml_type t);
LA_API int64_t la_ggml_block_elems(la_ggml_type t);      /* 1 for F32/F16/BF16, 32 or 256 for quants */
LA_API size_t la_ggml_block_bytes(la_ggml_type t);
/* Bytes of a row of n elements; LA_ERR_SHAPE if n is not a multiple of the block. */
LA_API la_status la_ggml_row_bytes(la_ggml_type t, int64_t n, size_t *out);

/* dst[0..n) = the n elements at src (n a multiple of the block); nothing
 * is written for an unknown type, NULL src or dst, or another n. */
LA_API void la_dequantize_row(la_ggml_type t, const void *src, float *dst, int64_t n);

/* y[r] = dot(row r of W, x), r in [0, rows); W is rows x cols of type t with
 * rows packed back to back. Threads over rows. No product runs in place:
 * an output (y, Y, each job's y) sharing a byte with x, X, W or another
 * job's y is LA_ERR_ARGUMENT. */
LA_API la_status la_matvec(la_context *ctx, la_ggml_type t, const void *W, int64_t rows, int64_t cols, const float *x,
                    float *y);

/* Several products of one x (a layer's q, k and v; gate and up): x is
 * rounded once and all rows share one parallel region. */
#define LA_MATVEC_MAX_JOBS 8
typedef struct {
    la_ggml_type type;
    const void *W;
    int64_t rows;
    float *y;
} la_matvec_job;
LA_API la_status la_matvec_batch(la_context *ctx, const la_matvec_job *jobs, int n_jobs, int64_t cols, const float *x);
/* As la_matvec_batch with f32 activations: x is not rounded to int8 (which
 * la_matvec and la_matvec_batch do per 32-element block for Q4_0, Q4_1 and
 * Q8_0 weights, as llama.cpp does), each block's f32 x is multiplied by the
 * widened codes; slower, and within f32 summation error of the float64 dot
 * of the dequantised weights. The model runtime's exact_decode path. */
LA_API la_status la_matvec_batch_f32(la_context *ctx, const la_matvec_job *jobs, int n_jobs, int64_t cols,
                                     const float *x);

/* Y[i][r] = dot(row r of W, X[i]) for i in [0, n): a matrix-matrix product
 * for prefill (X is n x cols, Y is n x rows, both row-major f32). n > 1 runs
 * a blocked GEMM in f32: each weight row is dequantised once per call (not
 * once per token) and multiplied by the f32 activations. */
LA_API la_status la_matmul(la_context *ctx, la_ggml_type t, const void *W, int64_t rows, int64_t cols, const float *X,
                    int64_t n, float *Y);
/* As la_matmul, but f32 activations for every n, one row included: la_matmul
 * (and la_matvec) round a single row of X to int8 per 32-element block, as
 * llama.cpp does, before multiplying; this multiplies f32 X by the
 * dequantised weights, as la_matmul does for n > 1, so a row's result does
 * not depend on how many rows came with it (beyond float summation order). */
LA_API la_status la_matmul_f32(la_context *ctx, la_ggml_type t, const void *W, int64_t rows, int64_t cols,
                               const float *X, int64_t n, float *Y);
/* The kernel la_matmul takes on ctx for n tokens of W's type and cols:
 *   "matvec"   n = 1: la_matvec;
 *   "amx_bf16" n > 1, a quantised type (Q4_0, Q4_1, Q8_0, Q4_K, Q6_K)
 *              or BF16, cols a multiple of 32, AMX
 *              on for ctx (la_context_amx) and its SIMD level avx512 or
 *              above: weights dequantised to bf16 once per call and
 *              activations rounded to bf16 (8 significant bits: each term
 *              w x within 2^-7 of itself), products summed in f32 over the
 *              whole row by TDPBF16PS;
 *   "dot_bf16" the same types and cols, bf16 products on for ctx
 *              (la_context_bf16) but AMX not taken, SIMD level
 *              avx512_bf16: the same rounding, products summed in f32
 *              over the whole row by VDPBF16PS;
 *   "f32"      otherwise, and la_matmul_f32 always: the blocked f32 GEMM.
 * On the amx_bf16, dot_bf16 and f32 paths a row's result depends on that
 * row of X alone, not on n, the row's position, the thread count or how
 * the rows were split into calls. NULL ctx, n or cols < 1, or a type
 * la_ggml_type_known refuses gives NULL. */
LA_API const char *la_matmul_path(const la_context *ctx, la_ggml_type t, int64_t cols, int64_t n);

#ifdef __cplusplus
}
#endif
#endif /* LONGATTN_H */
