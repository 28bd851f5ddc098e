/* One selector and one budget (la_sparse_choice, "SELECTOR:BUDGET"): the
 * parser, and la_sparse_select, which runs the chosen selector with its
 * defaults. Above the selectors (select.c, hip.c, chunks.c, routing.c),
 * none of which calls back here. */
#include "ops/sparse/select_common.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const kind_names[LA_SPARSE_KIND_COUNT] = {"none", "static", "topk", "vslash", "hip",
                                                             "chunks", "flex", "routing"};

/* The budget's range for its kind, and the options' (sink, local: 0 or the
 * selector's own; dense_layers >= 0): LA_OK or LA_ERR_ARGUMENT. */
static la_status check_choice(const la_sparse_choice *c) {
    if ((unsigned)c->kind >= LA_SPARSE_KIND_COUNT)
        return la_fail(LA_ERR_ARGUMENT, "sparse kind %d is unknown", (int)c->kind);
    const double b = c->budget;
    const char *name = kind_names[c->kind];
    if (c->kind == LA_SPARSE_NONE) return LA_OK;
    if (!isfinite(b) || b <= 0) return la_fail(LA_ERR_ARGUMENT, "%s budget %g: must be finite and > 0", name, b);
    const bool fraction = c->kind == LA_SPARSE_FLEX || (c->kind == LA_SPARSE_TOPK && b <= 1);
    if (c->kind == LA_SPARSE_FLEX && b > 1)
        return la_fail(LA_ERR_ARGUMENT, "flex budget %g: the coverage gamma must be in (0, 1]", b);
    if (!fraction && (b != floor(b) || b > (double)(1 << 30)))
        return la_fail(LA_ERR_ARGUMENT, "%s budget %g: must be a whole number in [1, 2^30]%s", name, b,
                       c->kind == LA_SPARSE_TOPK ? " (or a coverage in (0, 1])" : "");
    if (c->kind == LA_SPARSE_ROUTING && b > 65536)
        return la_fail(LA_ERR_ARGUMENT, "routing budget %g: at most 65536 clusters", b);
    const int64_t limit = (int64_t)1 << 30;
    if (c->sink_blocks < 0 || c->sink_blocks > limit || c->local_blocks < 0 || c->local_blocks > limit)
        return la_fail(LA_ERR_ARGUMENT, "%s: sink_blocks %lld, local_blocks %lld: each must be in [0, 2^30] (0: default)",
                       name, (long long)c->sink_blocks, (long long)c->local_blocks);
    if (c->dense_layers < 0 || c->dense_layers > limit)
        return la_fail(LA_ERR_ARGUMENT, "%s: dense_layers %lld must be in [0, 2^30]", name, (long long)c->dense_layers);
    if (c->probe_rows < 0 || c->probe_rows > limit)
        return la_fail(LA_ERR_ARGUMENT, "%s: probe_rows %lld must be in [0, 2^30]", name, (long long)c->probe_rows);
    if (c->probe_rows && c->kind != LA_SPARSE_TOPK)
        return la_fail(LA_ERR_ARGUMENT, "%s has no probe option (topk only)", name);
    if (c->sink_blocks && (c->kind == LA_SPARSE_VSLASH || c->kind == LA_SPARSE_CHUNKS))
        return la_fail(LA_ERR_ARGUMENT, "%s has no sink option (it always keeps the first %s)", name,
                       c->kind == LA_SPARSE_VSLASH ? "key block" : "chunk");
    if (c->local_blocks && (c->kind == LA_SPARSE_VSLASH || c->kind == LA_SPARSE_STATIC))
        return la_fail(LA_ERR_ARGUMENT, "%s has no local option (%s)", name,
                       c->kind == LA_SPARSE_VSLASH ? "it always keeps the local band" : "its budget is the window");
    return LA_OK;
}

/* The options after the budget: ",KEY=N" each, as the header lists them. */
static la_status parse_options(const char *text, const char *opt, la_sparse_choice *c) {
    static const char *const keys[4] = {"sink", "local", "dense-layers", "probe"};
    int64_t *fields[4] = {&c->sink_blocks, &c->local_blocks, &c->dense_layers, &c->probe_rows};
    bool seen[4] = {false, false, false, false};
    if (!*opt) return la_fail(LA_ERR_ARGUMENT, "'%s': empty option after the last ','", text);
    while (*opt) {
        const char *eq = strchr(opt, '='), *end = strchr(opt, ',');
        if (!end) end = opt + strlen(opt);
        if (!eq || eq > end)
            return la_fail(LA_ERR_ARGUMENT, "'%s': option '%.*s' is not KEY=N", text, (int)(end - opt), opt);
        int i = 0;
        while (i < 4 && !(strlen(keys[i]) == (size_t)(eq - opt) && !strncmp(opt, keys[i], (size_t)(eq - opt)))) i++;
        if (i == 4)
            return la_fail(LA_ERR_ARGUMENT, "'%s': unknown option '%.*s' (sink, local, dense-layers or probe)", text,
                           (int)(eq - opt), opt);
        if (seen[i]) return la_fail(LA_ERR_ARGUMENT, "'%s': option %s given twice", text, keys[i]);
        seen[i] = true;
        char *stop = NULL;
        errno = 0;
        const long long v = eq[1] >= '0' && eq[1] <= '9' ? strtoll(eq + 1, &stop, 10) : -1;
        const int64_t least = i == 2 ? 0 : 1;
        if (v < least || errno || stop != end || v > ((int64_t)1 << 30))
            return la_fail(LA_ERR_ARGUMENT, "'%s': %s=%.*s: expected a whole number in [%lld, 2^30]", text, keys[i],
                           (int)(end - eq - 1), eq + 1, (long long)least);
        *fields[i] = v;
        opt = *end ? end + 1 : end;
        if (*end && !*opt) return la_fail(LA_ERR_ARGUMENT, "'%s': empty option after the last ','", text);
    }
    return LA_OK;
}

la_status la_sparse_choice_parse(const char *text, la_sparse_choice *out) {
    if (!text || !out) return la_fail(LA_ERR_NULL, "%s is NULL", !text ? "text" : "out");
    if (!strcmp(text, "none")) {
        *out = (la_sparse_choice){.kind = LA_SPARSE_NONE};
        return la_succeed();
    }
    const char *colon = strchr(text, ':');
    la_sparse_choice c = {.kind = LA_SPARSE_NONE};
    for (int i = 1; colon && i < LA_SPARSE_KIND_COUNT; i++)
        if (strlen(kind_names[i]) == (size_t)(colon - text) && !strncmp(text, kind_names[i], (size_t)(colon - text)))
            c.kind = (la_sparse_kind)i;
    if (c.kind == LA_SPARSE_NONE)
        return la_fail(LA_ERR_ARGUMENT, "'%s': expected none or SELECTOR:BUDGET with SELECTOR one of static, topk, "
                       "vslash, hip, chunks, flex, routing", text);
    /* a plain decimal, as la_kv_policy_parse's budgets: strtod alone
     * skipped blanks ("topk: 0.9" passed, "topk:0.9 " did not) and read hex */
    const char *end = colon + 1 + strcspn(colon + 1, ",");
    if (!la_parse_decimal(colon + 1, (size_t)(end - (colon + 1)), &c.budget))
        return la_fail(LA_ERR_ARGUMENT, "'%s': the budget '%.*s' is not a number", text, (int)(end - (colon + 1)),
                       colon + 1);
    la_status s = *end ? parse_options(text, end + 1, &c) : LA_OK;
    if (s) return s;
    s = check_choice(&c);
    if (s) return s;
    *out = c;
    return la_succeed();
}

la_status la_sparse_choice_validate(const la_sparse_choice *c) {
    if (!c) return la_fail(LA_ERR_NULL, "choice is NULL");
    la_status s = check_choice(c);
    return s ? s : la_succeed();
}

la_status la_sparse_select(la_context *ctx, const la_sparse_choice *c, const la_attention_params *p,
                           const la_tensor *q, const la_tensor *k, la_block_index *out) {
    if (out) memset(out, 0, sizeof *out);
    if (!c) return la_fail(LA_ERR_NULL, "choice is NULL");
    la_status s = check_choice(c);
    if (s) return s;
    const int64_t n = (int64_t)c->budget;
    switch (c->kind) {
    case LA_SPARSE_STATIC: {
        la_sparse_static o = la_sparse_static_default();
        o.local_blocks = n;
        if (c->sink_blocks) o.sink_blocks = c->sink_blocks;
        return la_sparse_select_static(&o, p, q, k, out);
    }
    case LA_SPARSE_TOPK: {
        la_sparse_topk o = la_sparse_topk_default();
        if (c->budget <= 1) o.gamma = (float)c->budget;
        else o.top_k = n;
        if (c->sink_blocks) o.sink_blocks = c->sink_blocks;
        if (c->local_blocks) o.local_blocks = c->local_blocks;
        o.probe_rows = c->probe_rows;
        return la_sparse_select_topk(ctx, &o, p, q, k, out);
    }
    case LA_SPARSE_VSLASH: {
        la_sparse_vslash o = la_sparse_vslash_default();
        o.vertical = o.slash = n;
        return la_sparse_select_vslash(ctx, &o, p, q, k, out);
    }
    case LA_SPARSE_HIP: {
        la_sparse_hip o = la_sparse_hip_default();
        o.top_k = n;
        if (c->sink_blocks) o.sink_blocks = c->sink_blocks;
        if (c->local_blocks) o.local_blocks = c->local_blocks;
        return la_sparse_select_hip(ctx, &o, p, q, k, out);
    }
    case LA_SPARSE_CHUNKS: {
        la_sparse_chunks o = la_sparse_chunks_default();
        o.top_k = n;
        if (c->local_blocks) o.local_blocks = c->local_blocks;
        return la_sparse_select_chunks(ctx, &o, p, q, k, out);
    }
    case LA_SPARSE_FLEX: {
        la_sparse_flex o = la_sparse_flex_default();
        o.gamma = (float)c->budget;
        if (c->sink_blocks) o.sink_blocks = c->sink_blocks;
        if (c->local_blocks) o.local_blocks = c->local_blocks;
        return la_sparse_select_flex(ctx, &o, p, q, k, out, NULL);
    }
    case LA_SPARSE_ROUTING: {
        if (!q) return la_fail(LA_ERR_NULL, "q is NULL");
        la_sparse_routing o = la_sparse_routing_default();
        if (c->sink_blocks) o.sink_blocks = c->sink_blocks;
        if (c->local_blocks) o.local_blocks = c->local_blocks;
        la_sparse_routing_state *st;
        const int nd = q->ndim;
        if ((nd != 3 && nd != 4) || (s = la_sparse_routing_state_create(&st, q->shape[nd - 2], q->shape[nd - 1], n, 0)))
            return s ? s : la_fail(LA_ERR_SHAPE, "q has %d dims; expected 4 (or 3, varlen)", nd);
        s = la_sparse_select_routing(ctx, &o, st, p, q, k, out);
        la_sparse_routing_state_free(st);
        return s;
    }
    default: return la_fail(LA_ERR_ARGUMENT, "sparse kind none selects nothing (use dense attention)");
    }
}

