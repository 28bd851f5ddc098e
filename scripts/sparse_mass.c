/* Per-(layer, head) block-mass analysis of `longattn run --dump-qk` files
 * (BENCHMARKS.md, sixth session sparse section): oracle density per recall,
 * static windows, and five block-mass estimates (block means, mean query vs
 * every key, last row, 4 spread rows = topk probe=4, mean + last 3 rows)
 * under coverage gamma and fixed top-k. Standalone, not part of the build:
 *   gcc -O3 -march=native -fopenmp scripts/sparse_mass.c -o sparse_mass -lm
 *   OMP_NUM_THREADS=2 ./sparse_mass qk/layer-00.qk qk/layer-05.qk ... */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BS 64
static int LQ, LK, H, HKV, D;
static float *Q, *K;

static int read_qk(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    char line[256];
    if (!fgets(line, sizeof line, f)) return 0;
    int ver;
    if (sscanf(line, "longattn-qk %d %d %d %d %d %d", &ver, &LQ, &LK, &H, &HKV, &D) != 6) return 0;
    free(Q), free(K);
    Q = malloc((size_t)LQ * H * D * 4), K = malloc((size_t)LK * HKV * D * 4);
    if (fread(Q, 4, (size_t)LQ * H * D, f) != (size_t)LQ * H * D) return 0;
    if (fread(K, 4, (size_t)LK * HKV * D, f) != (size_t)LK * HKV * D) return 0;
    fclose(f);
    return 1;
}

typedef struct { double est; int id; } rk;
static int cmp_desc(const void *a, const void *b) {
    double x = ((const rk *)a)->est, y = ((const rk *)b)->est;
    if (x > y) return -1;
    if (x < y) return 1;
    return ((const rk *)a)->id - ((const rk *)b)->id;
}

#define NG 4
static const double gam[NG] = {0.9, 0.95, 0.98, 0.99};
#define NE 5 /* estimators */
#define NS 6
static const int loc[NS] = {1, 2, 4, 8, 16, 32};
#define NT 4
static const int tk[NT] = {8, 16, 32, 48};

/* pick by estimate est[0..nkb) (nonnegative, any scale): forced sink 0 and local nl blocks before diag;
 * then by estimate until coverage gamma of est total (gamma>0) or fixed count k. Returns true recall, *cnt count. */
static double pick(const double *est, const double *M, int nkb, int nl, double gamma, int k, int *cnt, rk *tmp) {
    char *mark = calloc(nkb, 1);
    double tot = 0, cov = 0, rec = 0;
    int n = 0;
    for (int b = 0; b < nkb; b++) tot += est[b];
    mark[0] = 1;
    for (int b = nkb - 1; b >= 0 && b >= nkb - nl; b--) mark[b] = 1;
    int m = 0;
    for (int b = 0; b < nkb; b++)
        if (mark[b]) cov += est[b], n++;
        else tmp[m].est = est[b], tmp[m].id = b, m++;
    qsort(tmp, m, sizeof *tmp, cmp_desc);
    for (int t = 0; t < m; t++) {
        if (gamma > 0 && cov >= gamma * tot) break;
        if (gamma <= 0 && t >= k) break;
        mark[tmp[t].id] = 1, cov += tmp[t].est, n++;
    }
    for (int b = 0; b < nkb; b++)
        if (mark[b]) rec += M[b];
    free(mark);
    *cnt = n;
    return rec;
}

int main(int argc, char **argv) {
    int step = 4;
    for (int a = 1; a < argc; a++) {
        if (!read_qk(argv[a])) { fprintf(stderr, "bad %s\n", argv[a]); return 1; }
        const int nqb = (LQ + BS - 1) / BS, off = LK - LQ;
        const float scale = 1.0f / sqrtf((float)D);
        printf("# %s LQ %d LK %d H %d HKV %d D %d\n", argv[a], LQ, LK, H, HKV, D);
        for (int h = 0; h < H; h++) {
            const int kh = h / (H / HKV);
            double orc_blocks[NG] = {0}, vis = 0, st_rec[NS] = {0}, st_blk[NS] = {0};
            double e_rec[NE][NG] = {{0}}, e_blk[NE][NG] = {{0}}, t_rec[NE][NT] = {{0}}, t_blk[NE][NT] = {{0}};
            int nq = 0;
#pragma omp parallel for schedule(dynamic) reduction(+ : orc_blocks[:NG], vis, st_rec[:NS], st_blk[:NS], e_rec[:NE][:NG], e_blk[:NE][:NG], t_rec[:NE][:NT], t_blk[:NE][:NT], nq)
            for (int qb = 8; qb < nqb; qb += step) {
                int i0 = qb * BS, i1 = i0 + BS < LQ ? i0 + BS : LQ, rows = i1 - i0;
                int kend = i1 - 1 + off + 1, nkb = (kend + BS - 1) / BS;
                double *M = calloc(nkb, 8), *E[NE];
                for (int e = 0; e < NE; e++) E[e] = calloc(nkb, 8);
                float *s = malloc((size_t)kend * 4);
                double *rowm = malloc((size_t)nkb * 8);
                float qm[256] = {0};
                for (int i = i0; i < i1; i++)
                    for (int d = 0; d < D; d++) qm[d] += Q[((size_t)i * H + h) * D + d] / rows;
                for (int i = i0; i < i1; i++) {
                    const float *qi = Q + ((size_t)i * H + h) * D;
                    int n = i + off + 1;
                    float mx = -INFINITY;
                    for (int j = 0; j < n; j++) {
                        const float *kj = K + ((size_t)j * HKV + kh) * D;
                        float acc = 0;
                        for (int d = 0; d < 64; d++) acc += qi[d] * kj[d];
                        s[j] = acc * scale;
                        if (s[j] > mx) mx = s[j];
                    }
                    double z = 0;
                    memset(rowm, 0, nkb * 8);
                    for (int j = 0; j < n; j++) {
                        double p = exp((double)(s[j] - mx));
                        z += p, rowm[j / BS] += p;
                    }
                    int r = i - i0;
                    for (int b = 0; b < nkb; b++) {
                        double p = rowm[b] / z;
                        M[b] += p / rows;
                        if (r == rows - 1) E[2][b] += p;                         /* last row */
                        if (r % 16 == 15 || r == rows - 1) E[3][b] += p;          /* 4 rows */
                        if (r >= rows - 3) E[4][b] += p; /* last 3 rows (+ mean below) */
                    }
                }
                /* est 0: mean q . mean k + log n ; est 1: lse over keys of mean q . k_j */
                for (int b = 0; b < nkb; b++) {
                    int j0 = b * BS, j1 = j0 + BS < kend ? j0 + BS : kend;
                    float km[256] = {0};
                    for (int j = j0; j < j1; j++)
                        for (int d = 0; d < D; d++) km[d] += K[((size_t)j * HKV + kh) * D + d] / (j1 - j0);
                    double a = 0;
                    for (int d = 0; d < D; d++) a += qm[d] * km[d];
                    E[0][b] = a * scale + log(j1 - j0);
                    double mx = -1e30, z = 0;
                    for (int j = j0; j < j1; j++) {
                        double t = 0;
                        for (int d = 0; d < D; d++) t += qm[d] * K[((size_t)j * HKV + kh) * D + d];
                        s[j] = (float)(t * scale);
                        if (s[j] > mx) mx = s[j];
                    }
                    for (int j = j0; j < j1; j++) z += exp(s[j] - mx);
                    E[1][b] = mx + log(z);
                }
                for (int e = 0; e < NE; e++) {
                    if (e == 2 || e == 3 || e == 4) continue;
                    double mx = -1e30, z = 0;
                    for (int b = 0; b < nkb; b++) if (E[e][b] > mx) mx = E[e][b];
                    for (int b = 0; b < nkb; b++) E[e][b] = exp(E[e][b] - mx), z += E[e][b];
                    for (int b = 0; b < nkb; b++) E[e][b] /= z;
                }
                for (int b = 0; b < nkb; b++) E[4][b] += E[1][b];
                rk *tmp = malloc(nkb * sizeof *tmp);
                int cnt;
                /* oracle */
                vis += nkb, nq++;
                for (int g = 0; g < NG; g++) { pick(M, M, nkb, 1, gam[g], 0, &cnt, tmp); orc_blocks[g] += cnt; }
                for (int t = 0; t < NS; t++) {
                    st_rec[t] += pick(M, M, nkb, loc[t], 0, 0, &cnt, tmp); /* k=0: forced only */
                    st_blk[t] += cnt;
                }
                for (int e = 0; e < NE; e++) {
                    for (int g = 0; g < NG; g++) { e_rec[e][g] += pick(E[e], M, nkb, 1, gam[g], 0, &cnt, tmp); e_blk[e][g] += cnt; }
                    for (int t = 0; t < NT; t++) { t_rec[e][t] += pick(E[e], M, nkb, 1, -1, tk[t], &cnt, tmp); t_blk[e][t] += cnt; }
                }
                free(tmp), free(M), free(s), free(rowm);
                for (int e = 0; e < NE; e++) free(E[e]);
            }
            printf("h%d oracle dens@0.9/.95/.98/.99:", h);
            for (int g = 0; g < NG; g++) printf(" %.3f", orc_blocks[g] / vis);
            printf(" | static rec(l=1,2,4,8,16,32):");
            for (int t = 0; t < NS; t++) printf(" %.3f", st_rec[t] / nq);
            printf("\n");
            static const char *en[NE] = {"meanmean", "lsekeys", "lastrow", "4rows", "mean+3"};
            for (int e = 0; e < NE; e++) {
                printf("   %-8s cov:", en[e]);
                for (int g = 0; g < NG; g++) printf(" %.3f/%.3f", e_rec[e][g] / nq, e_blk[e][g] / vis);
                printf(" | topk:");
                for (int t = 0; t < NT; t++) printf(" %.3f/%.3f", t_rec[e][t] / nq, t_blk[e][t] / vis);
                printf("\n");
            }
            fflush(stdout);
        }
    }
    return 0;
}
