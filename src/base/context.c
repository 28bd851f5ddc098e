#include "base.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* Whether la_matmul has a bf16 path on this machine: AMX, or AVX512_BF16
 * (VDPBF16PS, la_simd_hardware). */
static bool bf16_usable(const char **why) {
    if (la_amx_usable(NULL) || la_simd_hardware() >= LA_SIMD_AVX512_BF16) return true;
    if (why) *why = "this CPU has neither AMX nor AVX512_BF16";
    return false;
}

la_status la_context_create(la_context **out, int threads) {
    if (!out) return la_fail(LA_ERR_NULL, "out (la_context **) is NULL");
    *out = NULL;
    la_context *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return la_fail(LA_ERR_NOMEM, "could not allocate a context");
    ctx->simd = la_simd_detected();
    /* ctx->amx: bf16 products allowed (la_context_set_bf16), by default
     * wherever the CPU has a bf16 path, unless LONGATTN_AMX=0 or
     * LONGATTN_BF16=0. */
    const char *amx_env = getenv("LONGATTN_AMX"), *bf16_env = getenv("LONGATTN_BF16");
    /* exactly "0", as la_env_check accepts it: "0x" or "00" turned bf16 off
     * while "off" or "no" left it on, with no way to tell which was which */
    ctx->amx = !(amx_env && !strcmp(amx_env, "0")) && !(bf16_env && !strcmp(bf16_env, "0")) && bf16_usable(NULL);
    la_status s = la_context_set_threads(ctx, threads);
    if (s != LA_OK) {
        free(ctx);
        return s;
    }
    *out = ctx;
    return la_succeed();
}

void la_context_destroy(la_context *ctx) {
    if (!ctx) return;
    if (!ctx->workspace_borrowed) free(ctx->workspace);
    if (ctx->device_release) ctx->device_release(ctx);
    free(ctx);
}

la_status la_context_set_cuda_stream(la_context *ctx, void *stream) {
    if (!ctx) return la_fail(LA_ERR_NULL, "ctx is NULL");
    ctx->cuda_stream = stream;
    return la_succeed();
}

void *la_context_cuda_stream(const la_context *ctx) { return ctx ? ctx->cuda_stream : NULL; }

la_status la_context_set_threads(la_context *ctx, int threads) {
    if (!ctx) return la_fail(LA_ERR_NULL, "ctx is NULL");
    if (threads > LA_MAX_THREADS) return la_fail(LA_ERR_ARGUMENT, "threads is %d; at most %d", threads, LA_MAX_THREADS);
#ifdef _OPENMP
    /* the OpenMP default follows OMP_NUM_THREADS, which may ask for more
     * than the limit an explicit count is held to (OMP_NUM_THREADS=5000
     * gave a context of 5000 threads, past what la_peak_* and the kernels
     * take): capped the same way */
    if (threads <= 0) threads = omp_get_max_threads() < LA_MAX_THREADS ? omp_get_max_threads() : LA_MAX_THREADS;
#else
    threads = 1;
#endif
    ctx->threads = threads > 0 ? threads : 1;
    return la_succeed();
}

int la_context_threads(const la_context *ctx) { return ctx ? ctx->threads : 0; }

la_status la_context_set_simd(la_context *ctx, la_simd level) {
    if (!ctx) return la_fail(LA_ERR_NULL, "ctx is NULL");
    if ((unsigned)level >= LA_SIMD_COUNT)
        return la_fail(LA_ERR_ARGUMENT, "simd level %d is not a la_simd value", (int)level);
    if (level > la_simd_hardware())
        return la_fail(LA_ERR_UNSUPPORTED, "this CPU cannot run %s (best: %s)", la_simd_name(level),
                       la_simd_name(la_simd_hardware()));
    ctx->simd = level;
    return la_succeed();
}

/* The one setting behind both switches: ctx->amx, "la_matmul may round to
 * bf16", taken on AMX where usable, else with VDPBF16PS (products.c). */
la_status la_context_set_amx(la_context *ctx, bool on) {
    if (!ctx) return la_fail(LA_ERR_NULL, "ctx is NULL");
    const char *why = NULL;
    if (on && !la_amx_usable(&why)) return la_fail(LA_ERR_UNSUPPORTED, "AMX: %s", why);
    ctx->amx = on;
    return la_succeed();
}

bool la_context_amx(const la_context *ctx) { return ctx && ctx->amx && la_amx_usable(NULL); }

la_status la_context_set_bf16(la_context *ctx, bool on) {
    if (!ctx) return la_fail(LA_ERR_NULL, "ctx is NULL");
    const char *why = NULL;
    if (on && !bf16_usable(&why)) return la_fail(LA_ERR_UNSUPPORTED, "bf16 products: %s", why);
    ctx->amx = on;
    return la_succeed();
}

bool la_context_bf16(const la_context *ctx) { return ctx && ctx->amx; }

int la_amx_available(void) {
    const char *why = NULL;
    if (la_amx_usable(&why)) return la_succeed(), 1;
    la_fail(LA_ERR_UNSUPPORTED, "AMX: %s", why);
    return 0;
}

la_simd la_context_simd(const la_context *ctx) { return ctx ? ctx->simd : LA_SIMD_SCALAR; }

la_status la_context_set_workspace(la_context *ctx, void *mem, size_t bytes) {
    if (!ctx) return la_fail(LA_ERR_NULL, "ctx is NULL");
    if (!mem && bytes) return la_fail(LA_ERR_NULL, "mem is NULL but bytes is %zu", bytes);
    if (!ctx->workspace_borrowed) free(ctx->workspace);
    ctx->workspace = mem;
    ctx->workspace_bytes = mem ? bytes : 0;
    ctx->workspace_borrowed = mem != NULL;
    return la_succeed();
}

size_t la_context_workspace_bytes(const la_context *ctx) { return ctx ? ctx->workspace_bytes : 0; }

la_status la_workspace(la_context *ctx, size_t bytes, void **out) {
    *out = NULL;
    if (bytes == 0) bytes = 64;
    if (ctx->workspace_borrowed) {
        /* Lent memory may have any alignment; the kernels store floats,
         * int64s and SIMD vectors in their scratch, so it is used from its
         * first 64-byte boundary on (an odd address crashed them). */
        const size_t pad = (size_t)(-(uintptr_t)ctx->workspace & 63);
        const size_t usable = ctx->workspace_bytes > pad ? ctx->workspace_bytes - pad : 0;
        if (bytes > usable)
            return la_fail(LA_ERR_WORKSPACE,
                           "op needs %zu workspace bytes; the lent workspace has %zu from its first 64-byte boundary",
                           bytes, usable);
        *out = (char *)ctx->workspace + pad;
        return LA_OK;
    }
    if (bytes <= ctx->workspace_bytes) {
        *out = ctx->workspace;
        return LA_OK;
    }
    size_t rounded = (bytes + 63) & ~(size_t)63;
    if (rounded < bytes) return la_fail(LA_ERR_OVERFLOW, "workspace size %zu overflows", bytes);
    void *mem = aligned_alloc(64, rounded);
    if (!mem) return la_fail(LA_ERR_NOMEM, "could not allocate %zu workspace bytes", rounded);
    free(ctx->workspace);
    ctx->workspace = mem;
    ctx->workspace_bytes = rounded;
    *out = mem;
    return LA_OK;
}

/* The library reads its switches from the environment and may not print,
 * so a value it does not know was ignored where no one could see it
 * (LONGATTN_SIMD=avx-512 ran at the hardware's level). This names every
 * such variable, its value and the values it takes, for a program to show. */
la_status la_env_check(void) {
    char msg[1024] = "";
    size_t used = 0;
    const char *simd = getenv("LONGATTN_SIMD");
    if (simd && *simd) {
        bool known = false;
        for (int i = 0; i < LA_SIMD_COUNT; i++) known = known || !strcasecmp(simd, la_simd_name((la_simd)i));
        if (!known)
            used += (size_t)snprintf(msg, sizeof msg,
                                     "LONGATTN_SIMD='%.64s' is not a SIMD level; expected scalar, avx2, avx512 or "
                                     "avx512_bf16 (ignored: running at %s, this CPU's best)",
                                     simd, la_simd_name(la_simd_hardware()));
    }
    static const struct {
        const char *name, *accepted;
    } switches[] = {{"LONGATTN_BF16", "0 (f32 products), 1 (the default) or dot (no AMX)"},
                    {"LONGATTN_AMX", "0 (f32 products) or 1 (the default)"},
                    {"LONGATTN_MODEL_MMAP", "0 (the default: weights on 2 MB pages where offered) or 1 (mapped)"}};
    for (size_t i = 0; i < sizeof switches / sizeof switches[0]; i++) {
        const char *v = getenv(switches[i].name);
        if (v && *v && strcmp(v, "0") && strcmp(v, "1") && (i != 0 || strcmp(v, "dot")) && used < sizeof msg)
            used += (size_t)snprintf(msg + used, sizeof msg - used,
                                     "%s%s='%.64s' is not recognised; expected %s (ignored: the default applies)",
                                     used ? "; " : "", switches[i].name, v, switches[i].accepted);
    }
    return used ? la_fail(LA_ERR_ARGUMENT, "%s", msg) : la_succeed();
}
