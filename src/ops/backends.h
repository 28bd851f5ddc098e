/* The registry of backends, and running an attention problem on one: the
 * op layer's side of the seam in backend/backend.h. */
#ifndef LA_OPS_BACKENDS_H
#define LA_OPS_BACKENDS_H

#include "backend/backend.h"

/* The backend for tensors on `device`, or NULL (with LA_ERR_DEVICE set)
 * when this build has none. */
const la_backend *la_backend_for(la_device device);

/* Wait for the context's work on every backend that enqueues (the first
 * failure's status). */
la_status la_backends_synchronize(la_context *ctx);

/* Ask the backend whether it runs the problem, take the workspace it needs
 * from the context, and run it. `problem` is the call's problem struct
 * (p->op says which), whose first member is p. */
la_status la_backend_run(la_context *ctx, const la_backend *be, const la_attn_problem *p);

/* The same for a linear-mixer problem (p->op says which call; a backward
 * problem has p first). */
la_status la_backend_run_linear(la_context *ctx, const la_backend *be, const la_linear_problem *p);

#endif
