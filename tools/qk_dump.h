/* Attention inputs dumped from a model run (longattn run --dump-qk DIR)
 * and read back (longattn bench sparse --qk-file FILE): one file per
 * layer, DIR/layer-NN.qk, a text header line
 *   "longattn-qk 1 LQ LK H HKV D\n"
 * then q [LQ, H, D] and k [LK, HKV, D] as little-endian f32, q after RoPE,
 * k the cache the queries attend to (causal bottom-right). A prompt
 * prefilled in several chunks gives all its queries over all its keys; once
 * a KV policy (streaming) has evicted keys that earlier chunks' queries saw,
 * those queries no longer pair with the keys, and the file holds the last
 * chunk's queries and the keys they attended to. */
#ifndef LA_TOOLS_QK_DUMP_H
#define LA_TOOLS_QK_DUMP_H

#include "longattn.h"

#include <stdbool.h>
#include <stdint.h>

#define QK_DUMP_MAX_LAYERS 256

typedef struct {
    const char *dir;
    bool want[QK_DUMP_MAX_LAYERS]; /* layers to dump */
    float *q[QK_DUMP_MAX_LAYERS], *k[QK_DUMP_MAX_LAYERS];
    int64_t lq[QK_DUMP_MAX_LAYERS], lk[QK_DUMP_MAX_LAYERS], H, Hkv, D;
    bool last_chunk[QK_DUMP_MAX_LAYERS]; /* earlier chunks' queries dropped: their keys were evicted */
    bool failed;
} qk_dump;

/* layers: "all" or a comma list of layer numbers; makes the directory dir.
 * 0, or the exit status after printing why: 2 for bad layers (a usage
 * error), 1 when dir cannot be made or is not a directory. */
int qk_dump_init(qk_dump *d, const char *cmd, const char *dir, const char *layers);
/* la_session_params.on_attention: appends the chunk's queries while the
 * keys extend the last chunk's (else starts over from this chunk's), keeps
 * the latest keys. */
void qk_dump_observe(void *user, int64_t layer, const la_tensor *q, const la_tensor *k);
/* Write the files; false (printed) on failure. Frees the buffers. */
bool qk_dump_finish(qk_dump *d, const char *cmd);

/* Read one file: q [1, lq, H, D], k [1, lk, Hkv, D] (malloc'd data, free
 * q->data and k->data); false (printed) on failure. */
bool qk_file_read(const char *cmd, const char *path, la_tensor *q, la_tensor *k);

#endif
