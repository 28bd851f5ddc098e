/* What src/kv's policies need from the cache beyond the public API
 * (include/longattn.h): not exported. */
#ifndef LA_KV_INTERNAL_H
#define LA_KV_INTERNAL_H

#include "longattn.h"

/* Entries [0, result) of (layer, head, seq) whose stored values no longer
 * change until a compaction: a float cache's every entry; a quantised
 * cache's entries in quantised pages (the f32 window's rows are quantised
 * later, so what la_kv_cache_read returns for them will change). -1 for
 * indices out of range or a NULL cache. */
int64_t la_kv_cache_settled_len(const la_kv_cache *c, int64_t layer, int64_t head, int64_t seq);

/* h2o's snap= option (la_kv_policy.snap, a share of the budget): the
 * entries pinned by the votes of a prompt's last queries; 0 for every
 * other policy. */
static inline int64_t la_kv_h2o_snap(const la_kv_policy *p) {
    return p->kind == LA_KV_POLICY_H2O && p->snap > 0 && p->snap < 1 ? (int64_t)(p->snap * (double)p->budget) : 0;
}

#endif
