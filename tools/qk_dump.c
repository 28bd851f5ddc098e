/* Dumping attention inputs from a model run and reading them back
 * (qk_dump.h). */
#include "qk_dump.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int qk_dump_init(qk_dump *d, const char *cmd, const char *dir, const char *layers) {
    memset(d, 0, sizeof *d);
    d->dir = dir;
    if (!*layers) {
        fprintf(stderr, "%s: --dump-layers is empty\n", cmd);
        return 2;
    }
    if (!strcmp(layers, "all")) {
        for (int i = 0; i < QK_DUMP_MAX_LAYERS; i++) d->want[i] = true;
    } else {
        const char *p = layers;
        while (*p) {
            char *end;
            long v = strtol(p, &end, 10);
            if (end == p || v < 0 || v >= QK_DUMP_MAX_LAYERS || (*end && (*end != ',' || !end[1])) || *p == ' ' ||
                *p == '+') {
                fprintf(stderr, "%s: --dump-layers expects 'all' or layer numbers in [0, %d) separated by commas\n",
                        cmd, QK_DUMP_MAX_LAYERS);
                return 2;
            }
            if (d->want[v]) { /* as eval's lists: a repeat is a typo more often than intent */
                fprintf(stderr, "%s: --dump-layers names layer %ld twice\n", cmd, v);
                return 2;
            }
            d->want[v] = true;
            p = *end ? end + 1 : end;
        }
    }
    /* a directory that cannot be made is a failure at run time (exit 1), as
     * a missing file is; an existing file in its place was taken for the
     * directory, and the layers' files then failed after the whole run */
    struct stat sb;
    if (mkdir(dir, 0777) && errno != EEXIST) {
        fprintf(stderr, "%s: --dump-qk: cannot create '%s': %s\n", cmd, dir, strerror(errno));
        return 1;
    }
    if (stat(dir, &sb) || !S_ISDIR(sb.st_mode)) {
        fprintf(stderr, "%s: --dump-qk: '%s' is not a directory\n", cmd, dir);
        return 1;
    }
    return 0;
}

void qk_dump_observe(void *user, int64_t layer, const la_tensor *q, const la_tensor *k) {
    qk_dump *d = user;
    if (layer < 0 || layer >= QK_DUMP_MAX_LAYERS || !d->want[layer] || d->failed) return;
    const int64_t n = q->shape[1], H = q->shape[2], D = q->shape[3], L = k->shape[1], Hkv = k->shape[2];
    d->H = H, d->Hkv = Hkv, d->D = D;
    /* The keys of a chunk are the cache's entries, the chunk's own last: with
     * nothing evicted they are the last chunk's plus these n. Otherwise
     * (--kv streaming past its budget) the earlier queries attended to keys
     * that are gone; kept, they outnumbered the keys (q 1155 rows over k 195,
     * a file bench sparse refused) and paired queries with keys they never
     * saw. The file then holds this chunk's queries over the keys they saw. */
    if (d->q[layer] && L != d->lk[layer] + n) d->lq[layer] = 0, d->last_chunk[layer] = true;
    float *qn = realloc(d->q[layer], sizeof(float) * (size_t)((d->lq[layer] + n) * H * D));
    if (!qn) {
        d->failed = true;
        return;
    }
    d->q[layer] = qn;
    for (int64_t i = 0; i < n; i++)
        for (int64_t h = 0; h < H; h++)
            memcpy(qn + ((d->lq[layer] + i) * H + h) * D,
                   (const float *)q->data + i * q->stride[1] + h * q->stride[2], sizeof(float) * (size_t)D);
    d->lq[layer] += n;
    float *kn = realloc(d->k[layer], sizeof(float) * (size_t)(L * Hkv * D));
    if (!kn) {
        d->failed = true;
        return;
    }
    d->k[layer] = kn;
    for (int64_t j = 0; j < L; j++)
        for (int64_t h = 0; h < Hkv; h++)
            memcpy(kn + (j * Hkv + h) * D, (const float *)k->data + j * k->stride[1] + h * k->stride[2],
                   sizeof(float) * (size_t)D);
    d->lk[layer] = L;
}

bool qk_dump_finish(qk_dump *d, const char *cmd) {
    bool ok = !d->failed;
    if (d->failed) fprintf(stderr, "%s: out of memory dumping q and k\n", cmd);
    for (int l = 0; l < QK_DUMP_MAX_LAYERS; l++) {
        if (ok && d->q[l]) {
            char path[4096];
            snprintf(path, sizeof path, "%s/layer-%02d.qk", d->dir, l);
            FILE *f = fopen(path, "wb");
            ok = f && fprintf(f, "longattn-qk 1 %lld %lld %lld %lld %lld\n", (long long)d->lq[l], (long long)d->lk[l],
                              (long long)d->H, (long long)d->Hkv, (long long)d->D) > 0 &&
                 fwrite(d->q[l], sizeof(float), (size_t)(d->lq[l] * d->H * d->D), f) == (size_t)(d->lq[l] * d->H * d->D) &&
                 fwrite(d->k[l], sizeof(float), (size_t)(d->lk[l] * d->Hkv * d->D), f) ==
                     (size_t)(d->lk[l] * d->Hkv * d->D);
            if (f && fclose(f)) ok = false;
            if (!ok) fprintf(stderr, "%s: cannot write '%s'\n", cmd, path);
            else fprintf(stderr, "%s: wrote %s (q %lld x %lld x %lld, k %lld x %lld x %lld%s)\n", cmd, path,
                         (long long)d->lq[l], (long long)d->H, (long long)d->D, (long long)d->lk[l], (long long)d->Hkv,
                         (long long)d->D,
                         d->last_chunk[l] ? "; the last prefill chunk's queries: the KV policy evicted keys the "
                                            "earlier ones attended to" : "");
        }
        free(d->q[l]), free(d->k[l]);
        d->q[l] = d->k[l] = NULL;
    }
    return ok;
}

bool qk_file_read(const char *cmd, const char *path, la_tensor *q, la_tensor *k) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "%s: cannot open '%s': %s\n", cmd, path, strerror(errno));
        return false;
    }
    long long lq, lk, H, Hkv, D;
    int version;
    bool ok = fscanf(f, "longattn-qk %d %lld %lld %lld %lld %lld", &version, &lq, &lk, &H, &Hkv, &D) == 6 &&
              fgetc(f) == '\n' && version == 1 && lq > 0 && lk >= lq && H > 0 && Hkv > 0 && H % Hkv == 0 && D > 0 &&
              lk < (1LL << 28) && H < (1 << 20) && D < (1 << 20) && H * D < (1 << 20); /* H x D overflowed */
    if (!ok) {
        /* a directory opens but does not read: the system's reason, as the CLI's other readers give it */
        const int why = ferror(f) ? errno : 0;
        fclose(f);
        if (why) fprintf(stderr, "%s: cannot read '%s': %s\n", cmd, path, strerror(why));
        else
            fprintf(stderr, "%s: '%s' is not a longattn-qk 1 file (its first line is not \"longattn-qk 1 LQ LK H HKV D\" "
                            "with 0 < LQ <= LK < 2^28, HKV dividing H, H x D < 2^20)\n", cmd, path);
        return false;
    }
    /* The header says how many bytes follow: a file of another size is
     * refused before anything is allocated. A shorter one was reported only
     * after a read (or an allocation the header asked for) failed; a longer
     * one was taken, its extra bytes ignored, though they mean the shapes
     * in the header are not those of the data (or two files were joined). */
    const long long want = 4 * (lq * H * D + lk * Hkv * D); /* < 2^51: the bounds above */
    const long header = ftell(f);
    struct stat sb;
    if (header > 0 && !fstat(fileno(f), &sb) && S_ISREG(sb.st_mode) && sb.st_size != header + want) {
        const long long have = (long long)sb.st_size - header;
        fclose(f);
        fprintf(stderr, "%s: '%s' %s: its header (q %lld x %lld x %lld, k %lld x %lld x %lld f32) promises %lld bytes "
                        "after it, the file holds %lld\n", cmd, path, have < want ? "is truncated" : "has trailing bytes",
                lq, H, D, lk, Hkv, D, want, have);
        return false;
    }
    float *qd = malloc(sizeof(float) * (size_t)(lq * H * D)), *kd = malloc(sizeof(float) * (size_t)(lk * Hkv * D));
    ok = qd && kd && fread(qd, sizeof(float), (size_t)(lq * H * D), f) == (size_t)(lq * H * D) &&
         fread(kd, sizeof(float), (size_t)(lk * Hkv * D), f) == (size_t)(lk * Hkv * D);
    const bool trailing = ok && fgetc(f) != EOF; /* not a regular file: only reading finds the end */
    fclose(f);
    if (!ok || trailing) {
        free(qd), free(kd);
        fprintf(stderr, "%s: '%s' %s\n", cmd, path,
                !qd || !kd ? "needs more memory than there is" : trailing ? "has trailing bytes after its q and k"
                                                                          : "is truncated");
        return false;
    }
    /* a model's q and k are finite: a NaN or inf (a damaged or foreign file)
     * gave every selector a recall of nan with exit 0 */
    for (int64_t i = 0, nq = lq * H * D, n = nq + lk * Hkv * D; i < n; i++) {
        const float x = i < nq ? qd[i] : kd[i - nq];
        if (!isfinite(x)) {
            fprintf(stderr, "%s: '%s': %s element %lld is %g; q and k must be finite\n", cmd, path, i < nq ? "q" : "k",
                    (long long)(i < nq ? i : i - nq), (double)x);
            free(qd), free(kd);
            return false;
        }
    }
    *q = la_tensor_contiguous(qd, LA_F32, 4, (int64_t[]){1, lq, H, D});
    *k = la_tensor_contiguous(kd, LA_F32, 4, (int64_t[]){1, lk, Hkv, D});
    return true;
}
