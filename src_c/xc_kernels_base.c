/* xc_kernels_base.c: the kernels at the compiler's baseline for the target (SSE2 on x86-64, NEON
 * on aarch64): the path every CPU can run. Flags: -O3 -fno-trapping-math (+ OpenMP). */
#define XC_ISA base
#include "xc_kernels_isa.h"
