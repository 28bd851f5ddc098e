/* KV-cache policies over la_kv_cache (include/longattn.h, "KV-cache
 * policies"): the policy strings, the stateless ones (full, streaming)
 * and the parse/validate rules every policy shares. The stateful ones
 * (h2o, snapkv, quest, duo) live in policy_state.c. */
#include "base/base.h"
#include "kv/kv_internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* every option each policy takes (longattn.h's policy list) */
#define KNOWN \
    "known: full, streaming:BUDGET[:sinks=N], " \
    "h2o:BUDGET[:recent=N][:snap=SHARE[:window=N][:kernel=K][:pool=max|avg]][:decode=grow|evict], " \
    "snapkv:BUDGET[:recent=N][:window=N][:kernel=K][:pool=max|avg][:adapt=SHARE][:carry=G][:pyramid=F]" \
    "[:share=S:file=FILE], quest:BUDGET[:page=N], duo:BUDGET[:sinks=N][:share=S][:FILE]"

static const struct {
    const char *name;
    la_kv_policy_kind kind;
} names[] = {{"full", LA_KV_POLICY_FULL},     {"streaming", LA_KV_POLICY_STREAMING}, {"h2o", LA_KV_POLICY_H2O},
             {"snapkv", LA_KV_POLICY_SNAPKV}, {"quest", LA_KV_POLICY_QUEST},         {"duo", LA_KV_POLICY_DUO}};

static const char *kind_name(la_kv_policy_kind k) {
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (names[i].kind == k) return names[i].name;
    return "?";
}

static bool parse_int(const char *s, size_t n, long long *out) {
    char buf[32];
    if (!n || n >= sizeof buf) return false;
    memcpy(buf, s, n), buf[n] = 0;
    char *end;
    errno = 0;
    *out = strtoll(buf, &end, 10);
    return end != buf && !*end && !errno && (buf[0] == '-' || (buf[0] >= '0' && buf[0] <= '9'));
}

/* The first field p's kind does not take that is not 0 (file: not empty),
 * or NULL; *unless says when the kind would take it. la_kv_policy_parse
 * leaves those fields 0, so validate refusing them makes the two agree: a
 * field the kind ignores is a mistake, not an option (a snap on streaming,
 * a budget on full). */
static const char *stray_field(const la_kv_policy *p, const char **unless) {
    const la_kv_policy_kind k = p->kind;
    const bool h2o = k == LA_KV_POLICY_H2O, snapkv = k == LA_KV_POLICY_SNAPKV;
    const bool votes = snapkv || (h2o && p->snap > 0); /* h2o votes only with snap */
    const char *with_snap = h2o ? " without snap > 0" : "";
    const struct {
        const char *name;
        bool set, taken;
        const char *unless;
    } fields[] = {{"budget", p->budget != 0, k != LA_KV_POLICY_FULL, ""},
                  {"sinks", p->sinks != 0, k == LA_KV_POLICY_STREAMING || k == LA_KV_POLICY_DUO, ""},
                  {"recent", p->recent != 0, h2o || snapkv, ""},
                  {"window", p->window != 0, votes, with_snap},
                  {"kernel", p->kernel != 0, votes, with_snap},
                  {"pool_avg", p->pool_avg != 0, votes, with_snap},
                  {"page", p->page != 0, k == LA_KV_POLICY_QUEST, ""},
                  {"share", p->share != 0, k == LA_KV_POLICY_DUO || snapkv, ""},
                  {"snap", p->snap != 0, h2o, ""},
                  {"decode_grow", p->decode_grow != 0, h2o, ""},
                  {"adapt", p->adapt != 0, snapkv, ""},
                  {"carry", p->carry != 0, snapkv, ""},
                  {"pyramid", p->pyramid != 0, snapkv, ""},
                  {"file", p->file[0] != 0, k == LA_KV_POLICY_DUO || (snapkv && p->share > 0),
                   snapkv ? " without share > 0" : ""}};
    for (size_t i = 0; i < sizeof fields / sizeof *fields; i++)
        if (fields[i].set && !fields[i].taken) return *unless = fields[i].unless, fields[i].name;
    return NULL;
}

static la_status check_ranges(const la_kv_policy *p);

la_status la_kv_policy_validate(const la_kv_policy *p) {
    if (!p) return la_fail(LA_ERR_NULL, "la_kv_policy_validate: policy is NULL");
    la_status st = check_ranges(p);
    if (st) return st;
    const char *unless, *stray = stray_field(p, &unless);
    if (stray)
        return la_fail(LA_ERR_ARGUMENT,
                       "KV policy %s: %s is set, but %s takes no %s%s (a field the policy does not take must be 0, "
                       "as la_kv_policy_parse leaves it)",
                       kind_name(p->kind), stray, kind_name(p->kind), stray, unless);
    return la_succeed();
}

/* The kind known, and the budget and the options it takes in range. */
static la_status check_ranges(const la_kv_policy *p) {
    const char *n = kind_name(p->kind);
    const long long b = (long long)p->budget;
    switch (p->kind) {
    case LA_KV_POLICY_FULL: return la_succeed();
    case LA_KV_POLICY_STREAMING:
    case LA_KV_POLICY_DUO:
        if (p->sinks < 0 || p->budget <= p->sinks || p->budget > (1LL << 30))
            return la_fail(LA_ERR_ARGUMENT,
                           "KV policy %s: the budget %lld must be an integer in (sinks = %lld, 2^30] (the attention "
                           "sinks plus a recent window)",
                           n, b, (long long)p->sinks);
        if (p->kind == LA_KV_POLICY_DUO) {
            if (!(p->share >= 0 && p->share <= 1))
                return la_fail(LA_ERR_ARGUMENT, "KV policy duo: share %g must be in [0, 1]", p->share);
            if (!memchr(p->file, 0, sizeof p->file) || !p->file[0])
                return la_fail(LA_ERR_ARGUMENT, "KV policy duo: the score file name is empty or longer than %d bytes",
                               LA_KV_POLICY_PATH_MAX - 1);
        }
        return la_succeed();
    case LA_KV_POLICY_H2O:
        if (p->budget < 1 || p->budget > (1LL << 30) || p->recent < 0 || p->recent >= p->budget)
            return la_fail(LA_ERR_ARGUMENT,
                           "KV policy h2o: the budget %lld must be in [1, 2^30] and recent %lld in [0, budget)", b,
                           (long long)p->recent);
        if (!(p->snap >= 0 && p->snap < 1))
            return la_fail(LA_ERR_ARGUMENT, "KV policy h2o: snap %g (the voted share of the budget) must be in [0, 1)",
                           p->snap);
        if (p->decode_grow != 0 && p->decode_grow != 1)
            return la_fail(LA_ERR_ARGUMENT, "KV policy h2o: decode_grow is %d; must be 0 (evict) or 1 (grow)",
                           p->decode_grow);
        const int64_t snap = la_kv_h2o_snap(p);
        if (snap > 0) {
            /* the voted entries come beside the newest max(recent, window), which the vote cannot rank */
            if (p->window < 1 || (p->recent > p->window ? p->recent : p->window) > p->budget - snap)
                return la_fail(LA_ERR_ARGUMENT,
                               "KV policy h2o: with snap %g (%lld entries) the window %lld must be >= 1 and "
                               "max(recent %lld, window) + %lld at most the budget %lld",
                               p->snap, (long long)snap, (long long)p->window, (long long)p->recent,
                               (long long)snap, b);
            if (p->kernel < 1 || p->kernel % 2 == 0 || p->kernel > 1025 || (p->pool_avg != 0 && p->pool_avg != 1))
                return la_fail(LA_ERR_ARGUMENT,
                               "KV policy h2o: kernel %lld must be odd, in [1, 1025], and pool_avg 0 or 1 (%d)",
                               (long long)p->kernel, p->pool_avg);
        }
        return la_succeed();
    case LA_KV_POLICY_SNAPKV:
        if (p->window < 1 || p->budget <= p->window || p->budget > (1LL << 30))
            return la_fail(LA_ERR_ARGUMENT,
                           "KV policy snapkv: the budget %lld must be in (window = %lld, 2^30] and the window >= 1",
                           b, (long long)p->window);
        if (p->recent < 0 || p->recent >= p->budget)
            return la_fail(LA_ERR_ARGUMENT, "KV policy snapkv: recent %lld must be in [0, budget = %lld)",
                           (long long)p->recent, b);
        if (p->kernel < 1 || p->kernel % 2 == 0 || p->kernel > 1025)
            return la_fail(LA_ERR_ARGUMENT, "KV policy snapkv: kernel %lld must be odd, in [1, 1025]",
                           (long long)p->kernel);
        if (p->pool_avg != 0 && p->pool_avg != 1)
            return la_fail(LA_ERR_ARGUMENT, "KV policy snapkv: pool_avg is %d; must be 0 (max) or 1 (avg)",
                           p->pool_avg);
        if (!(p->adapt >= 0 && p->adapt <= 1))
            return la_fail(LA_ERR_ARGUMENT, "KV policy snapkv: adapt %g (the share moved between heads) must be in "
                           "[0, 1]",
                           p->adapt);
        if (!(p->carry >= 0 && p->carry <= 1) || (p->carry > 0 && p->adapt > 0))
            return la_fail(LA_ERR_ARGUMENT, "KV policy snapkv: carry %g (the weight of earlier votes) must be in "
                           "[0, 1], and 0 with adapt (%g)",
                           p->carry, p->adapt);
        if (!(p->share >= 0 && p->share < 1) || (p->share > 0 && p->pyramid != 0) ||
            (p->share > 0 && (!memchr(p->file, 0, sizeof p->file) || !p->file[0])))
            return la_fail(LA_ERR_ARGUMENT, "KV policy snapkv: share %g (of the budget given by the duo score file's "
                           "layers) must be in [0, 1), not with pyramid (%g), and needs a file",
                           p->share, p->pyramid);
        if ((int64_t)floor((1 - p->share) * (double)p->budget) <= (p->recent > p->window ? p->recent : p->window))
            return la_fail(LA_ERR_ARGUMENT, "KV policy snapkv: with share %g the smallest layer budget %lld must "
                           "exceed max(window %lld, recent %lld)",
                           p->share, (long long)floor((1 - p->share) * (double)p->budget), (long long)p->window,
                           (long long)p->recent);
        if (!(p->pyramid > -1 && p->pyramid < 1))
            return la_fail(LA_ERR_ARGUMENT, "KV policy snapkv: pyramid %g (the per-layer budget slope) must be in "
                           "(-1, 1)",
                           p->pyramid);
        /* the smallest layer budget (the first or last layer's) still holds the newest entries and a vote */
        if (llround((double)p->budget * (1 - fabs(p->pyramid))) <= (p->recent > p->window ? p->recent : p->window))
            return la_fail(LA_ERR_ARGUMENT,
                           "KV policy snapkv: with pyramid %g the smallest layer budget %lld must exceed max(window "
                           "%lld, recent %lld)",
                           p->pyramid, (long long)llround((double)p->budget * (1 - fabs(p->pyramid))),
                           (long long)p->window, (long long)p->recent);
        return la_succeed();
    case LA_KV_POLICY_QUEST:
        if (p->budget < 1 || p->budget > (1LL << 30) || p->page < 0 || p->page > (1LL << 30))
            return la_fail(LA_ERR_ARGUMENT, "KV policy quest: the budget %lld and page %lld must be in [1, 2^30]", b,
                           (long long)p->page);
        return la_succeed();
    }
    return la_fail(LA_ERR_ARGUMENT, "KV policy kind %d is unknown; " KNOWN, (int)p->kind);
}

bool la_kv_policy_has_state(const la_kv_policy *p) {
    return p && (p->kind == LA_KV_POLICY_H2O || p->kind == LA_KV_POLICY_SNAPKV || p->kind == LA_KV_POLICY_QUEST ||
                 p->kind == LA_KV_POLICY_DUO);
}

/* One OPTION=VALUE (or, for duo, a bare file name) of policy `text`. */
static la_status parse_option(const char *text, la_kv_policy *p, const char *f, size_t n, unsigned *seen) {
    const char *eq = memchr(f, '=', n);
    const char *pn = kind_name(p->kind);
    if (!eq) {
        if (p->kind != LA_KV_POLICY_DUO)
            return la_fail(LA_ERR_ARGUMENT, "KV policy '%s': '%.*s' is not OPTION=VALUE", text, (int)n, f);
        eq = f - 1; /* a bare field is duo's file */
    }
    const size_t kn = eq < f ? 4 : (size_t)(eq - f);
    const char *key = eq < f ? "file" : f, *val = eq + 1;
    const size_t vn = (size_t)(f + n - val);
    static const struct {
        const char *key;
        unsigned kinds; /* bit per la_kv_policy_kind */
    } opts[] = {{"sinks", 1u << LA_KV_POLICY_STREAMING | 1u << LA_KV_POLICY_DUO},
                {"recent", 1u << LA_KV_POLICY_H2O | 1u << LA_KV_POLICY_SNAPKV},
                {"window", 1u << LA_KV_POLICY_SNAPKV | 1u << LA_KV_POLICY_H2O},
                {"kernel", 1u << LA_KV_POLICY_SNAPKV | 1u << LA_KV_POLICY_H2O},
                {"pool", 1u << LA_KV_POLICY_SNAPKV | 1u << LA_KV_POLICY_H2O},
                {"share", 1u << LA_KV_POLICY_DUO | 1u << LA_KV_POLICY_SNAPKV},
                {"file", 1u << LA_KV_POLICY_DUO | 1u << LA_KV_POLICY_SNAPKV},
                {"page", 1u << LA_KV_POLICY_QUEST},
                {"snap", 1u << LA_KV_POLICY_H2O},
                {"decode", 1u << LA_KV_POLICY_H2O},
                {"adapt", 1u << LA_KV_POLICY_SNAPKV},
                {"carry", 1u << LA_KV_POLICY_SNAPKV},
                {"pyramid", 1u << LA_KV_POLICY_SNAPKV}};
    size_t o = 0;
    while (o < sizeof opts / sizeof *opts && (strlen(opts[o].key) != kn || memcmp(opts[o].key, key, kn))) o++;
    if (o == sizeof opts / sizeof *opts || !(opts[o].kinds >> p->kind & 1))
        return la_fail(LA_ERR_ARGUMENT, "KV policy '%s': %s takes no option '%.*s'", text, pn, (int)kn, key);
    if (*seen >> o & 1)
        return la_fail(LA_ERR_ARGUMENT, "KV policy '%s': option '%s' given twice", text, opts[o].key);
    *seen |= 1u << o;
    long long v = 0;
    if (o <= 3 && (!parse_int(val, vn, &v) || v < 0 || v > (1LL << 30)))
        return la_fail(LA_ERR_ARGUMENT, "KV policy '%s': %s must be an integer in [0, 2^30], not '%.*s'", text,
                       opts[o].key, (int)vn, val);
    switch (o) {
    case 0: p->sinks = v; break;
    case 1: p->recent = v; break;
    case 2: p->window = v; break;
    case 3: p->kernel = v; break;
    case 4:
        if (vn == 3 && !memcmp(val, "max", 3)) p->pool_avg = 0;
        else if (vn == 3 && !memcmp(val, "avg", 3)) p->pool_avg = 1;
        else return la_fail(LA_ERR_ARGUMENT, "KV policy '%s': pool must be max or avg", text);
        break;
    case 5:
    case 8:
    case 10:
    case 11:
    case 12: { /* duo's share of heads; h2o's snap, the voted share of the budget; snapkv's adapt, carry, pyramid */
        char buf[64];
        if (!vn || vn >= sizeof buf)
            return la_fail(LA_ERR_ARGUMENT, "KV policy '%s': %s is empty or too long", text, opts[o].key);
        memcpy(buf, val, vn), buf[vn] = 0;
        double *f = o == 5 ? &p->share : o == 8 ? &p->snap : o == 10 ? &p->adapt : o == 11 ? &p->carry : &p->pyramid;
        const bool ok =
            la_parse_decimal(val, vn, f) && (o == 12 ? *f > -1 && *f < 1 : *f >= 0 && (o != 8 ? *f <= 1 : *f < 1));
        if (!ok)
            return la_fail(LA_ERR_ARGUMENT, "KV policy '%s': %s must be a number in %s, not '%s'", text, opts[o].key,
                           o == 12 ? "(-1, 1)" : o == 8 ? "[0, 1)" : "[0, 1]", buf);
        break;
    }
    case 9:
        if (vn == 4 && !memcmp(val, "grow", 4)) p->decode_grow = 1;
        else if (vn == 5 && !memcmp(val, "evict", 5)) p->decode_grow = 0;
        else return la_fail(LA_ERR_ARGUMENT, "KV policy '%s': decode must be grow or evict", text);
        break;
    case 7:
        if (!parse_int(val, vn, &v) || v < 0 || v > (1LL << 30))
            return la_fail(LA_ERR_ARGUMENT, "KV policy '%s': page must be an integer in [0, 2^30]", text);
        p->page = v;
        break;
    default:
        if (!vn || vn >= sizeof p->file)
            return la_fail(LA_ERR_ARGUMENT, "KV policy '%s': the score file name is empty or longer than %d bytes",
                           text, LA_KV_POLICY_PATH_MAX - 1);
        memcpy(p->file, val, vn), p->file[vn] = 0;
    }
    return LA_OK;
}

la_status la_kv_policy_parse(const char *text, la_kv_policy *out) {
    if (!text || !out) return la_fail(LA_ERR_NULL, "la_kv_policy_parse: %s is NULL", !text ? "text" : "out");
    const char *colon = strchr(text, ':');
    const size_t nn = colon ? (size_t)(colon - text) : strlen(text);
    la_kv_policy p = {.kind = LA_KV_POLICY_FULL};
    size_t i = 0;
    while (i < sizeof names / sizeof *names && (strlen(names[i].name) != nn || memcmp(names[i].name, text, nn))) i++;
    if (i == sizeof names / sizeof *names)
        return la_fail(LA_ERR_ARGUMENT, "KV policy '%s' is unknown; " KNOWN, text);
    p.kind = names[i].kind;
    if (p.kind == LA_KV_POLICY_FULL) {
        if (colon) return la_fail(LA_ERR_ARGUMENT, "KV policy '%s': full takes no budget", text);
        *out = p;
        return la_succeed();
    }
    if (!colon)
        return la_fail(LA_ERR_ARGUMENT, "KV policy '%s' needs a budget: %s:BUDGET (entries kept per layer and KV head)",
                       text, names[i].name);
    const char *num = colon + 1, *end = strchr(num, ':');
    long long budget;
    if (!parse_int(num, end ? (size_t)(end - num) : strlen(num), &budget) || budget < 1 || budget > (1LL << 30))
        return la_fail(LA_ERR_ARGUMENT, "KV policy '%s': the budget must be an integer in [1, 2^30] (entries kept per "
                       "layer and KV head)",
                       text);
    /* defaults only for the fields this kind takes: validate refuses the others unless 0 */
    const bool h2o = p.kind == LA_KV_POLICY_H2O, snapkv = p.kind == LA_KV_POLICY_SNAPKV;
    const bool duo = p.kind == LA_KV_POLICY_DUO;
    p.budget = budget;
    if (p.kind == LA_KV_POLICY_STREAMING || duo) p.sinks = LA_KV_STREAMING_SINKS;
    if (h2o) p.recent = budget / 2; /* snapkv's is 0: it keeps just its window */
    if (h2o || snapkv) p.window = LA_KV_SNAPKV_WINDOW, p.kernel = LA_KV_SNAPKV_KERNEL; /* h2o: with snap only */
    if (duo) p.share = 0.5, snprintf(p.file, sizeof p.file, "%s", LA_KV_DUO_SCORES_DEFAULT);
    if (p.kind == LA_KV_POLICY_QUEST) p.page = LA_KV_QUEST_PAGE;
    unsigned seen = 0;
    while (end) {
        const char *f = end + 1;
        end = strchr(f, ':');
        /* duo's file may hold ':' only as the last field */
        if (p.kind == LA_KV_POLICY_DUO && end && !memchr(f, '=', (size_t)(end - f)) && !strchr(end, '=')) end = NULL;
        const size_t n = end ? (size_t)(end - f) : strlen(f);
        if (!n) return la_fail(LA_ERR_ARGUMENT, "KV policy '%s': an empty option", text);
        la_status st = parse_option(text, &p, f, n, &seen);
        if (st) return st;
    }
    if (h2o && !(p.snap > 0)) {
        if (seen & (7u << 2))
            return la_fail(LA_ERR_ARGUMENT, "KV policy '%s': h2o takes window=, kernel= and pool= only with snap= > 0",
                           text);
        p.window = 0, p.kernel = 0; /* no vote */
    }
    la_status st = la_kv_policy_validate(&p);
    if (st) {
        /* name the text as given, in place of validate's "KV policy KIND: " */
        const char *why = la_last_error(), *sep = strncmp(why, "KV policy ", 10) ? NULL : strstr(why, ": ");
        return la_fail(st, "KV policy '%s': %s", text, sep ? sep + 2 : why);
    }
    *out = p;
    return la_succeed();
}

la_status la_kv_cache_apply_policy(la_kv_cache *c, const la_kv_policy *p, int64_t layer, int64_t seq) {
    if (!c || !p) return la_fail(LA_ERR_NULL, "la_kv_cache_apply_policy: %s is NULL", !c ? "cache" : "policy");
    const la_kv_cache_params *cp = la_kv_cache_params_of(c);
    if (layer < 0 || layer >= cp->n_layers || seq < 0 || seq >= cp->max_seqs)
        return la_fail(LA_ERR_ARGUMENT, "la_kv_cache_apply_policy: layer %lld or seq %lld out of range",
                       (long long)layer, (long long)seq);
    la_status st = la_kv_policy_validate(p);
    if (st) return st;
    if (p->kind == LA_KV_POLICY_FULL) return la_succeed();
    if (p->kind != LA_KV_POLICY_STREAMING)
        return la_fail(LA_ERR_ARGUMENT,
                       "la_kv_cache_apply_policy: policy %s needs a la_kv_policy_state (la_kv_policy_update)",
                       kind_name(p->kind));
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
        st = la_kv_cache_compact(c, layer, h, seq, slots, n_drop);
        free(slots);
        if (st) return st;
    }
    return la_succeed();
}
