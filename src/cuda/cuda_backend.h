/* The CUDA backend's table (src/cuda/backend.c): exact attention forward on
 * NVIDIA GPUs, bf16/f16 in and out with f32 accumulation. Registered in
 * src/ops/backends.c when the build defines LA_WITH_CUDA. */
#ifndef LA_CUDA_BACKEND_H
#define LA_CUDA_BACKEND_H

#include "backend/backend.h"

extern const la_backend la_cuda_backend;

#endif
