/* `longattn bench sparse --qk-file`: selectors on dumped real attention
 * inputs (sparse_qk.c). */
#ifndef LA_TOOLS_SPARSE_QK_H
#define LA_TOOLS_SPARSE_QK_H

#include <stdbool.h>

/* files: comma-separated qk files, each read and checked before
 * before(arg) (the ceilings) is called; 0 on success, 1 on failure
 * (printed; before not called when a file fails its check). */
int sparse_qk_bench(const char *files, int threads, bool json, bool quick, void (*before)(const void *),
                    const void *arg);

#endif
