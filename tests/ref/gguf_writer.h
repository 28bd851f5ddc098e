/* A small GGUF writer for tests: builds files with any metadata and tensors
 * (and, by editing the image afterwards, any corruption). */
#ifndef LA_GGUF_WRITER_H
#define LA_GGUF_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct gguf_writer gguf_writer;

gguf_writer *gw_new(uint32_t version, uint32_t alignment); /* alignment 0 = default 32 */
void gw_kv_u32(gguf_writer *w, const char *key, uint32_t v);
void gw_kv_i32(gguf_writer *w, const char *key, int32_t v);
void gw_kv_u64(gguf_writer *w, const char *key, uint64_t v);
void gw_kv_f32(gguf_writer *w, const char *key, float v);
void gw_kv_bool(gguf_writer *w, const char *key, bool v);
void gw_kv_str(gguf_writer *w, const char *key, const char *v);
void gw_kv_arr_str(gguf_writer *w, const char *key, const char *const *v, uint64_t n);
void gw_kv_arr_f32(gguf_writer *w, const char *key, const float *v, uint64_t n);
void gw_kv_arr_i32(gguf_writer *w, const char *key, const int32_t *v, uint64_t n);
void gw_tensor(gguf_writer *w, const char *name, uint32_t ggml_type, int n_dims, const int64_t *ne, const void *data,
               size_t nbytes);
int gw_finish(gguf_writer *w, void **buf, size_t *size); /* malloc'd file image; 0 on success */
int gw_write_file(gguf_writer *w, const char *path);      /* 0 on success */
void gw_free(gguf_writer *w);

#endif
