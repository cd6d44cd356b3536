/* xc_f64_base.c: the float64 kernels for the compiler's baseline for the target (SSE2 on x86-64,
 * NEON on aarch64): the path every CPU can run. Flags: -O3 -fno-trapping-math -ffp-contract=fast
 * (+ OpenMP). Nothing else differs between the (ISA, dtype) files: xc_kernels.h holds the
 * kernels. */
#define XC_F64
#define XC_NAME(op) xc_##op##_f64_base
#include "xc_kernels.h"
