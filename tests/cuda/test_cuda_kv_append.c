/* la_attention_kv_append on CUDA tensors: the random cases of the CPU test
 * (tests/attention/kv_append_cases.h: every dtype pair, contiguous and
 * paged caches, strided new rows) must leave the device cache equal, byte
 * for byte, to the one built from the definition; bad inputs (a host
 * pointer, mixed devices) fail with their status and write nothing.
 * Skips (exit 77) where no CUDA device is usable. */
#include "../attention/kv_append_cases.h"
#include "cuda_test_util.h"

#include <stdio.h>

static void random_cases(uint64_t *rng, la_context *ctx) {
    kva_spec specs[64];
    const int n = kva_specs(specs, 64);
    for (int i = 0; i < n; i++) {
        kva_case c;
        kva_build(rng, &specs[i], &c);
        dev_buf kn = to_device(&c.k_new), vn = to_device(&c.v_new), kc = to_device(&c.k_cache),
                vc = to_device(&c.v_cache);
        la_status s = la_attention_kv_append(ctx, &c.layout, &kn.t, &vn.t, &kc.t, &vc.t);
        tu_check(s == LA_OK, "case %d: %s", i, la_last_error());
        cuda_ok(cudaDeviceSynchronize(), "append");
        from_device(&c.k_cache, &kc), from_device(&c.v_cache, &vc);
        tu_check(kva_same(&c.k_cache, &c.k_want) && kva_same(&c.v_cache, &c.v_want),
                 "case %d (B=%lld n=%lld D=%lld page %lld, %s -> %s): device cache differs from the definition", i,
                 (long long)c.s.B, (long long)c.s.n, (long long)c.s.D, (long long)c.s.block_size,
                 la_dtype_name(c.s.new_dt), la_dtype_name(c.s.cache_dt));
        cudaFree(kn.mem), cudaFree(vn.mem), cudaFree(kc.mem), cudaFree(vc.mem);
        kva_free(&c);
    }
}

static void bad_inputs(uint64_t *rng, la_context *ctx) {
    kva_spec spec = {.B = 2, .n = 3, .Hkv = 2, .D = 16, .block_size = 4, .blocks_per_seq = 3,
                     .new_dt = LA_BF16, .cache_dt = LA_BF16};
    kva_case c;
    kva_build(rng, &spec, &c);
    dev_buf kn = to_device(&c.k_new), vn = to_device(&c.v_new), kc = to_device(&c.k_cache),
            vc = to_device(&c.v_cache);
    struct {
        const char *label;
        la_tensor k_new;
    } bad[] = {{"host pointer in a CUDA tensor", kn.t}, {"mixed devices (k_new on the CPU)", c.k_new.t}};
    bad[0].k_new.data = c.k_new.t.data;
    for (int i = 0; i < 2; i++) {
        la_status s = la_attention_kv_append(ctx, &c.layout, &bad[i].k_new, &vn.t, &kc.t, &vc.t);
        cudaDeviceSynchronize();
        cu_check_rejected(bad[i].label, s, LA_ERR_DEVICE, &c.k_cache, &kc, "k_cache");
    }
    la_status s = la_attention_kv_append(ctx, &c.layout, &kn.t, &vn.t, &kc.t, &vc.t);
    tu_check(s == LA_OK, "valid call after the bad ones: %s", la_last_error());
    cudaFree(kn.mem), cudaFree(vn.mem), cudaFree(kc.mem), cudaFree(vc.mem);
    kva_free(&c);
}

int main(void) {
    if (!la_cuda_available()) {
        printf("SKIP: %s\n", la_last_error());
        return 77;
    }
    uint64_t rng = tu_seed();
    la_context *ctx;
    if (la_context_create(&ctx, 2)) return 1;
    bad_inputs(&rng, ctx);
    random_cases(&rng, ctx);
    la_context_destroy(ctx);
    return tu_finish();
}
