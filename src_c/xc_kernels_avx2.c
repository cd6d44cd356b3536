/* xc_kernels_avx2.c: the kernels for x86-64 CPUs with AVX2 and FMA (Haswell, Zen 1 and later).
 * Flags: -mavx2 -mfma on top of the baseline's; used only when xc_cpu.c finds both usable. */
#define XC_ISA avx2
#include "xc_kernels_isa.h"
