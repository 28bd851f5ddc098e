/* Checks the linear mixers' entry points share (linear.c defines them;
 * titans.c uses them too). */
#ifndef LA_OPS_LINEAR_VALIDATE_H
#define LA_OPS_LINEAR_VALIDATE_H

#include "ops/backends.h"
#include "ops/validate.h"

/* (la_check_shaped and la_check_packed_seqlens: ops/validate.h) */

/* The backend of the tensors' device (NULL entries skipped), or NULL with
 * LA_ERR_DEVICE set when they disagree or the build has none. */
const la_backend *la_linear_backend_of(const la_tensor *const *t, int n);

#endif
