/* xc_kernels_base.c: the kernels of xc_kernels.inc for float32 and float64, at the compiler's
 * baseline flags for the target (SSE2 on x86-64, NEON on aarch64) plus -O3 and OpenMP when the
 * build has it. The bodies live in xc_kernels.inc; this file only names the instantiations. */
#include <math.h>
#include <stdlib.h>

#include "xc_api.h"
#include "xc_math.h"
#include "xc_rows.h"

#define XC_REAL float
#define XC_SUFFIX f32
#define XC_EXP xc_expf
#include "xc_kernels.inc"

#define XC_REAL double
#define XC_SUFFIX f64
#define XC_EXP xc_exp
#include "xc_kernels.inc"

int xc_openmp_enabled(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}
