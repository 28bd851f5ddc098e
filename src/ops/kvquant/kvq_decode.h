/* Decode attention over one layer of quantised KV pages: validation and
 * dispatch, for the cache's public la_kv_cache_decode (src/kv). */
#ifndef LA_OPS_KVQ_DECODE_H
#define LA_OPS_KVQ_DECODE_H

#include "backend/kvq_problem.h"

/* q [B, Lq, H, D] f32, out like q (f32, bf16 or f16), lse [B, Lq, H] f32
 * or NULL, for sequences [seq0, seq0 + B) of kv, Hkv KV heads. The score
 * rule may only set scale and causal (LA_ERR_UNSUPPORTED otherwise). `fn`
 * names the public call in messages. */
la_status la_kvq_decode(la_context *ctx, const char *fn, const la_attention_params *p, const la_tensor *q,
                        const la_kvq_layer *kv, int64_t seq0, int64_t Hkv, la_tensor *out, la_tensor *lse);

#endif
