/* xc_dispatch.h: the kernel table. One set of kernels per instruction set is compiled
 * (xc_{f32,f64}_{base,avx2,avx512}.c on x86-64, xc_{f32,f64}_{base,neon,sve}.c on aarch64, as
 * setup.py's compiler allows); xc_dispatch.c chooses the
 * best set this CPU runs, once, when the extension is imported, and the xc_api.h entry points
 * forward to it. */
#ifndef XC_DISPATCH_H
#define XC_DISPATCH_H

#include "xc_api.h"

typedef struct {
    const char *name; /* "baseline" | "avx2" | "avx512" | "neon" | "sve": show_config()'s names */
    int (*cpu_supports)(void);
    int (*xent_f32)(const xc_xent_args *);
    int (*xent_f64)(const xc_xent_args *);
    int (*xent_backward_f32)(const xc_xent_args *, const double *);
    int (*xent_backward_f64)(const xc_xent_args *, const double *);
    int (*shard_stats_f32)(const xc_shard_args *);
    int (*shard_stats_f64)(const xc_shard_args *);
    int (*shard_grad_f32)(const xc_shard_args *);
    int (*shard_grad_f64)(const xc_shard_args *);
    int (*lse_rows_f32)(const xc_matrix *, int64_t, int64_t, float *, int);
    int (*lse_rows_f64)(const xc_matrix *, int64_t, int64_t, double *, int);
    int (*softmax_rows_f32)(const xc_matrix *, int64_t, int64_t, const xc_matrix *, int, int);
    int (*softmax_rows_f64)(const xc_matrix *, int64_t, int64_t, const xc_matrix *, int, int);
    void (*math_array_f32)(int, const float *, float *, int64_t);
    void (*math_array_f64)(int, const double *, double *, int64_t);
} xc_kernel_table;

/* Choose the best set the CPU supports. Called once by the Cython module's initialisation. */
void xc_dispatch_init(void);

/* The sets compiled into this build, best last: names and whether this CPU runs them. */
int xc_isa_count(void);
const char *xc_isa_name(int index);
int xc_isa_supported(int index);

/* Make the set called `name` active. Returns 0, or -1 when it is not compiled in, -2 when this
 * CPU cannot run it. Not thread-safe against running kernels: for import time and tests. */
int xc_use_isa(const char *name);
const char *xc_active_isa(void);

#endif /* XC_DISPATCH_H */
