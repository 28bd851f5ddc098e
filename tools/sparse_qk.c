/* `longattn bench sparse --qk-file FILE[,FILE...]`: each selector, at
 * several budgets, on attention inputs dumped from a real model
 * (`longattn run --dump-qk DIR`, qk_dump.h): selection time, density and
 * recall (la_block_index_quality on sampled rows), one line per file and
 * selector ("SELECTOR:BUDGET" as --sparse spells it). */
#include "cli_util.h"
#include "qk_dump.h"
#include "sparse_qk.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define QK_RECALL_ROWS 2048

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Every file is read and checked before `before` runs (the ceilings, about
 * 2 s): a missing or malformed file was found only after them. A regular
 * file is read again for its rows (one at a time in memory); anything else
 * (a pipe, /dev/stdin) can be read once only, so its q and k are kept. */
int sparse_qk_bench(const char *files, int threads, bool json, bool quick, void (*before)(const void *),
                    const void *arg) {
    static const char *const full[] = {"static:4",  "static:8",  "static:16", "topk:0.8",   "topk:0.9", "topk:0.95",
                                       "topk:4",    "topk:8",    "topk:16",   "vslash:16",  "vslash:32", "vslash:64",
                                       "hip:4",     "hip:8",     "hip:16",    "chunks:1",   "chunks:2", "flex:0.9",
                                       "flex:0.95", "routing:8", "routing:16", "topk:0.9,probe=4",
                                       "topk:0.95,probe=4", "topk:0.98,probe=4", "topk:0.99,probe=4"};
    static const char *const small[] = {"static:8", "topk:0.9", "vslash:32", "hip:8", "topk:0.95,probe=4"};
    const char *const *sel = quick ? small : full;
    const int nsel = quick ? (int)(sizeof small / sizeof *small) : (int)(sizeof full / sizeof *full);
    int n = 1;
    for (const char *c = files; *c; c++) n += *c == ',';
    char *list = strdup(files), **paths = calloc((size_t)n, sizeof *paths);
    la_tensor *kept = calloc((size_t)n * 2, sizeof *kept); /* q, k of file i at 2i, 2i + 1; data NULL: reread */
    int rc = 0;
    if (!list || !paths || !kept) {
        fprintf(stderr, "longattn bench: out of memory\n");
        rc = 1;
    }
    n = 0;
    for (char *save = NULL, *path = rc ? NULL : strtok_r(list, ",", &save); path; path = strtok_r(NULL, ",", &save))
        paths[n++] = path;
    for (int f = 0; f < n && !rc; f++) {
        struct stat sb;
        const bool regular = !stat(paths[f], &sb) && S_ISREG(sb.st_mode);
        if (!qk_file_read("longattn bench", paths[f], &kept[2 * f], &kept[2 * f + 1])) rc = 1;
        else if (regular) {
            free(kept[2 * f].data), free(kept[2 * f + 1].data);
            kept[2 * f].data = kept[2 * f + 1].data = NULL;
        }
    }
    if (rc) goto done;
    before(arg);
    la_context *ctx;
    la_status st = la_context_create(&ctx, threads > 0 ? threads : 0);
    if (st) {
        fprintf(stderr, "longattn bench: context: %s\n", la_last_error());
        rc = 1;
        goto done;
    }
    for (int f = 0; f < n && !rc; f++) {
        const char *path = paths[f];
        la_tensor q = kept[2 * f], k = kept[2 * f + 1];
        kept[2 * f].data = kept[2 * f + 1].data = NULL; /* freed below, with the reread ones */
        if (!q.data && !qk_file_read("longattn bench", path, &q, &k)) { /* changed since it was checked */
            rc = 1;
            break;
        }
        la_attention_params p = la_attention_params_default();
        p.causal = 1;
        if (!json)
            printf("%s: Lq %lld Lk %lld H %lld Hkv %lld D %lld\n%-12s %8s %8s %10s\n", path, (long long)q.shape[1],
                   (long long)k.shape[1], (long long)q.shape[2], (long long)k.shape[2], (long long)q.shape[3],
                   "selector", "density", "recall", "select_ms");
        for (int i = 0; i < nsel && !rc; i++) {
            la_sparse_choice c;
            la_block_index x;
            la_sparse_quality qu;
            if ((st = la_sparse_choice_parse(sel[i], &c))) break;
            const double t0 = now_s();
            st = la_sparse_select(ctx, &c, &p, &q, &k, &x);
            const double ms = (now_s() - t0) * 1e3;
            if (!st) st = la_block_index_quality(ctx, &p, &q, &k, &x, QK_RECALL_ROWS, 1, &qu);
            la_block_index_free(&x);
            if (st) {
                fprintf(stderr, "longattn bench: %s on %s: %s\n", sel[i], path, la_last_error());
                rc = 1;
                break;
            }
            if (json) {
                printf("{\"op\":\"sparse_qk\",\"file\":");
                cli_json_string(stdout, path); /* a quote or backslash printed bare made invalid JSON */
                printf(",\"Lq\":%lld,\"Lk\":%lld,\"H\":%lld,\"Hkv\":%lld,\"D\":%lld,"
                       "\"selector\":\"%s\",\"density\":%.4f,\"recall\":%.4f,\"rows\":%lld,\"select_ms\":%.2f}\n",
                       (long long)q.shape[1], (long long)k.shape[1], (long long)q.shape[2],
                       (long long)k.shape[2], (long long)q.shape[3], sel[i], qu.density, qu.recall,
                       (long long)qu.rows, ms);
            } else
                printf("%-12s %8.4f %8.4f %10.2f\n", sel[i], qu.density, qu.recall, ms);
            fflush(stdout);
        }
        free(q.data), free(k.data);
    }
    la_context_destroy(ctx);
done:
    for (int f = 0; kept && f < 2 * n; f++) free(kept[f].data);
    free(kept), free(paths), free(list);
    return rc;
}
