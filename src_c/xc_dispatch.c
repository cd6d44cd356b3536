/* xc_dispatch.c: the kernel table and the xc_api.h entry points that forward to it.
 * Compiled at baseline flags, with the extension: it must run on every CPU. It learns which sets
 * were compiled from XC_HAVE_AVX2 / XC_HAVE_AVX512 (x86-64) and XC_HAVE_NEON / XC_HAVE_SVE
 * (aarch64): setup.py defines them when the compiler accepted those flags, as c-blosc2's
 * dispatcher does. */
#include "xc_dispatch.h"

#include <string.h>

#include "xc_cpu.h"

#define XC_DECLARE_ISA(isa)                                                                        \
    int xc_xent_f32_##isa(const xc_xent_args *);                                                   \
    int xc_xent_f64_##isa(const xc_xent_args *);                                                   \
    int xc_xent_backward_f32_##isa(const xc_xent_args *, const double *);                          \
    int xc_xent_backward_f64_##isa(const xc_xent_args *, const double *);                          \
    int xc_shard_stats_f32_##isa(const xc_shard_args *);                                           \
    int xc_shard_stats_f64_##isa(const xc_shard_args *);                                           \
    int xc_shard_grad_f32_##isa(const xc_shard_args *);                                            \
    int xc_shard_grad_f64_##isa(const xc_shard_args *);                                            \
    int xc_lse_rows_f32_##isa(const xc_matrix *, int64_t, int64_t, float *, int);                  \
    int xc_lse_rows_f64_##isa(const xc_matrix *, int64_t, int64_t, double *, int);                 \
    int xc_softmax_rows_f32_##isa(const xc_matrix *, int64_t, int64_t, const xc_matrix *, int,     \
                                  int);                                                            \
    int xc_softmax_rows_f64_##isa(const xc_matrix *, int64_t, int64_t, const xc_matrix *, int,     \
                                  int);                                                            \
    void xc_math_array_f32_##isa(int, const float *, float *, int64_t);                            \
    void xc_math_array_f64_##isa(int, const double *, double *, int64_t);

#define XC_TABLE(label, isa, supports)                                                             \
    {label,                                                                                        \
     supports,                                                                                     \
     xc_xent_f32_##isa,                                                                            \
     xc_xent_f64_##isa,                                                                            \
     xc_xent_backward_f32_##isa,                                                                   \
     xc_xent_backward_f64_##isa,                                                                   \
     xc_shard_stats_f32_##isa,                                                                     \
     xc_shard_stats_f64_##isa,                                                                     \
     xc_shard_grad_f32_##isa,                                                                      \
     xc_shard_grad_f64_##isa,                                                                      \
     xc_lse_rows_f32_##isa,                                                                        \
     xc_lse_rows_f64_##isa,                                                                        \
     xc_softmax_rows_f32_##isa,                                                                    \
     xc_softmax_rows_f64_##isa,                                                                    \
     xc_math_array_f32_##isa,                                                                      \
     xc_math_array_f64_##isa}

static int always(void) { return 1; }

XC_DECLARE_ISA(base)
#ifdef XC_HAVE_AVX2
XC_DECLARE_ISA(avx2)
#endif
#ifdef XC_HAVE_AVX512
XC_DECLARE_ISA(avx512)
#endif
#ifdef XC_HAVE_NEON
XC_DECLARE_ISA(neon)
#endif
#ifdef XC_HAVE_SVE
XC_DECLARE_ISA(sve)
#endif

/* Best last: xc_dispatch_init takes the last entry the CPU supports. */
static const xc_kernel_table xc_tables[] = {
    XC_TABLE("baseline", base, always),
#ifdef XC_HAVE_AVX2
    XC_TABLE("avx2", avx2, xc_cpu_has_avx2),
#endif
#ifdef XC_HAVE_AVX512
    XC_TABLE("avx512", avx512, xc_cpu_has_avx512),
#endif
#ifdef XC_HAVE_NEON
    XC_TABLE("neon", neon, xc_cpu_has_neon),
#endif
#ifdef XC_HAVE_SVE
    XC_TABLE("sve", sve, xc_cpu_has_sve),
#endif
};
#define XC_N_TABLES ((int)(sizeof xc_tables / sizeof xc_tables[0]))

/* Written by xc_dispatch_init() at import (and by xc_use_isa in tests), read-only otherwise. */
static const xc_kernel_table *xc_active = &xc_tables[0];

void xc_dispatch_init(void)
{
    for (int k = XC_N_TABLES - 1; k >= 0; k--)
        if (xc_tables[k].cpu_supports()) {
            xc_active = &xc_tables[k];
            return;
        }
}

int xc_isa_count(void) { return XC_N_TABLES; }
const char *xc_isa_name(int index) { return xc_tables[index].name; }
int xc_isa_supported(int index) { return xc_tables[index].cpu_supports(); }
const char *xc_active_isa(void) { return xc_active->name; }

int xc_use_isa(const char *name)
{
    for (int k = 0; k < XC_N_TABLES; k++)
        if (strcmp(xc_tables[k].name, name) == 0) {
            if (!xc_tables[k].cpu_supports())
                return -2;
            xc_active = &xc_tables[k];
            return 0;
        }
    return -1;
}

/* ---- xc_api.h ---------------------------------------------------------------------------------- */

int xc_xent_f32(const xc_xent_args *args) { return xc_active->xent_f32(args); }
int xc_xent_f64(const xc_xent_args *args) { return xc_active->xent_f64(args); }
int xc_xent_backward_f32(const xc_xent_args *args, const double *lse_in)
{
    return xc_active->xent_backward_f32(args, lse_in);
}
int xc_xent_backward_f64(const xc_xent_args *args, const double *lse_in)
{
    return xc_active->xent_backward_f64(args, lse_in);
}
int xc_shard_stats_f32(const xc_shard_args *args) { return xc_active->shard_stats_f32(args); }
int xc_shard_stats_f64(const xc_shard_args *args) { return xc_active->shard_stats_f64(args); }
int xc_shard_grad_f32(const xc_shard_args *args) { return xc_active->shard_grad_f32(args); }
int xc_shard_grad_f64(const xc_shard_args *args) { return xc_active->shard_grad_f64(args); }

int xc_lse_rows_f32(const xc_matrix *x, int64_t n_rows, int64_t n_classes, float *lse_out,
                    int n_threads)
{
    return xc_active->lse_rows_f32(x, n_rows, n_classes, lse_out, n_threads);
}

int xc_lse_rows_f64(const xc_matrix *x, int64_t n_rows, int64_t n_classes, double *lse_out,
                    int n_threads)
{
    return xc_active->lse_rows_f64(x, n_rows, n_classes, lse_out, n_threads);
}

int xc_softmax_rows_f32(const xc_matrix *x, int64_t n_rows, int64_t n_classes, const xc_matrix *out,
                        int log_softmax, int n_threads)
{
    return xc_active->softmax_rows_f32(x, n_rows, n_classes, out, log_softmax, n_threads);
}

int xc_softmax_rows_f64(const xc_matrix *x, int64_t n_rows, int64_t n_classes, const xc_matrix *out,
                        int log_softmax, int n_threads)
{
    return xc_active->softmax_rows_f64(x, n_rows, n_classes, out, log_softmax, n_threads);
}

void xc_math_array_f32(int fn, const float *x, float *out, int64_t n)
{
    xc_active->math_array_f32(fn, x, out, n);
}
void xc_math_array_f64(int fn, const double *x, double *out, int64_t n)
{
    xc_active->math_array_f64(fn, x, out, n);
}

int xc_openmp_enabled(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

int xc_openmp_version(void)
{
#ifdef _OPENMP
    return _OPENMP;
#else
    return 0;
#endif
}

int xc_openmp_max_threads(void) { return omp_get_max_threads(); }

const void *xc_openmp_entry(void)
{
#ifdef _OPENMP
    /* The address the loader bound this extension's omp_get_max_threads to: it lies inside
     * the runtime library the kernels actually call, whichever other OpenMP runtimes the process
     * has loaded (torch bundles its own libgomp). A function pointer converted to an object
     * pointer: not ISO C, but defined by POSIX (dlsym) and by Windows. */
    return (const void *)&omp_get_max_threads;
#else
    return NULL;
#endif
}
