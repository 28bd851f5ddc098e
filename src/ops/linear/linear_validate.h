/* Checks the linear mixers' entry points share (linear.c defines them;
 * titans.c uses them too). */
#ifndef LA_OPS_LINEAR_VALIDATE_H
#define LA_OPS_LINEAR_VALIDATE_H

#include "ops/backends.h"

/* A tensor of exactly the shape `want` (nd dims; dims in zero_mask may be
 * 0), of dtype a or b, not overlapping itself. */
la_status la_linear_check_shaped(const la_tensor *t, const char *name, const int64_t *want, int nd, unsigned zero_mask,
                                 la_dtype a, la_dtype b);

/* cu_seqlens of n sequences over `total` packed tokens; *max_len the longest. */
la_status la_linear_check_cu_seqlens(const int32_t *cu, int64_t n, int64_t total, int64_t *max_len);

/* The backend of the tensors' device (NULL entries skipped), or NULL with
 * LA_ERR_DEVICE set when they disagree or the build has none. */
const la_backend *la_linear_backend_of(const la_tensor *const *t, int n);

#endif
