/* The CPU side of la_attention_kv_append: copy each new row (every head)
 * to the place the op layer found for it, converting to the cache's dtype
 * (round to nearest even). A copy per element: appends are small next to
 * the attention that reads them. */
#include "cpu/attention/kv_append.h"

la_status la_cpu_kv_append(la_context *ctx, const la_attn_kv_append_problem *p, void *ws) {
    (void)ctx, (void)ws;
    const la_attn_problem *a = &p->a;
    for (int64_t b = 0; b < a->num_seqs; b++)
        for (int64_t i = 0; i < a->Lq; i++) {
            const int64_t dst = p->dst_rows[b * a->Lq + i];
            for (int64_t h = 0; h < a->Hkv; h++) {
                const int64_t kin = b * a->k.batch_stride + i * a->k.token_stride + h * a->k.head_stride;
                const int64_t vin = b * a->v.batch_stride + i * a->v.token_stride + h * a->v.head_stride;
                const int64_t out = dst + h * p->k_cache.head_stride;
                for (int64_t d = 0; d < a->D; d++) {
                    la_store_f32(p->k_cache.data, p->k_cache.dtype, out + d, la_load_f32(a->k.data, a->k.dtype, kin + d));
                    la_store_f32(p->v_cache.data, p->v_cache.dtype, out + d, la_load_f32(a->v.data, a->v.dtype, vin + d));
                }
            }
        }
    return LA_OK;
}
