/* Eviction policies over la_kv_cache (include/longattn.h): each decides
 * which slots of a (layer, head, sequence) to drop and hands them to
 * la_kv_cache_compact. */
#include "base/base.h"

#include <errno.h>
#include <stdlib.h>

la_status la_kv_policy_parse(const char *text, la_kv_policy *out) {
    if (!text || !out) return la_fail(LA_ERR_NULL, "la_kv_policy_parse: %s is NULL", !text ? "text" : "out");
    if (!strcmp(text, "full")) {
        *out = (la_kv_policy){.kind = LA_KV_POLICY_FULL};
        return la_succeed();
    }
    static const char streaming[] = "streaming:";
    if (strncmp(text, streaming, sizeof streaming - 1))
        return la_fail(LA_ERR_ARGUMENT, "KV policy '%s' is unknown; known: full, streaming:BUDGET", text);
    const char *num = text + sizeof streaming - 1;
    char *end;
    errno = 0;
    long long budget = strtoll(num, &end, 10);
    if (end == num || *end || errno || budget <= LA_KV_STREAMING_SINKS || budget > (1LL << 30))
        return la_fail(LA_ERR_ARGUMENT,
                       "KV policy '%s': the budget must be an integer in (%d, 2^30] (the %d attention sinks plus a "
                       "recent window)",
                       text, LA_KV_STREAMING_SINKS, LA_KV_STREAMING_SINKS);
    *out = (la_kv_policy){.kind = LA_KV_POLICY_STREAMING, .budget = budget, .sinks = LA_KV_STREAMING_SINKS};
    return la_succeed();
}

la_status la_kv_cache_apply_policy(la_kv_cache *c, const la_kv_policy *p, int64_t layer, int64_t seq) {
    if (!c || !p) return la_fail(LA_ERR_NULL, "la_kv_cache_apply_policy: %s is NULL", !c ? "cache" : "policy");
    const la_kv_cache_params *cp = la_kv_cache_params_of(c);
    if (layer < 0 || layer >= cp->n_layers || seq < 0 || seq >= cp->max_seqs)
        return la_fail(LA_ERR_ARGUMENT, "la_kv_cache_apply_policy: layer %lld or seq %lld out of range",
                       (long long)layer, (long long)seq);
    if (p->kind == LA_KV_POLICY_FULL) return la_succeed();
    if (p->kind != LA_KV_POLICY_STREAMING || p->sinks < 0 || p->budget <= p->sinks)
        return la_fail(LA_ERR_ARGUMENT, "la_kv_cache_apply_policy: policy %d with budget %lld and %lld sinks is not valid",
                       (int)p->kind, (long long)p->budget, (long long)p->sinks);
    /* A quantised cache drops whole key groups, from the first group
     * boundary at or after the sinks, so every kept group moves intact and
     * nothing is quantised twice: the sinks round up to a key group and the
     * cache holds up to budget + key_group - 1 entries. */
    const int64_t kg = cp->quant != LA_KV_QUANT_NONE ? cp->quant_key_group : 1;
    const int64_t first = (p->sinks + kg - 1) / kg * kg;
    for (int64_t h = 0; h < cp->n_kv_heads; h++) {
        const int64_t len = la_kv_cache_len(c, layer, h, seq);
        if (len <= p->budget) continue;
        /* drop [first, first + n_drop): the middle between the sinks and the window */
        int64_t n_drop = (len - p->budget) / kg * kg;
        if (n_drop > len - first) n_drop = (len - first) / kg * kg;
        if (n_drop <= 0) continue;
        int32_t *slots = malloc(sizeof(int32_t) * (size_t)n_drop);
        if (!slots) return la_fail(LA_ERR_NOMEM, "la_kv_cache_apply_policy: no memory for %lld slots", (long long)n_drop);
        for (int64_t i = 0; i < n_drop; i++) slots[i] = (int32_t)(first + i);
        la_status st = la_kv_cache_compact(c, layer, h, seq, slots, n_drop);
        free(slots);
        if (st) return st;
    }
    return la_succeed();
}
