/* The CPU backend: its table for the op layer's registry. */
#ifndef LA_CPU_BACKEND_H
#define LA_CPU_BACKEND_H

#include "backend/backend.h"

extern const la_backend la_cpu_backend;

#endif
