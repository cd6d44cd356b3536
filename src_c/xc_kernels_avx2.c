/* xc_kernels_avx2.c: the kernels for x86-64 CPUs with AVX2, FMA and F16C (Haswell, Zen 1 and later).
 * Flags: -mavx2 -mfma -mf16c on top of the baseline's; used only when xc_cpu.c finds all three usable. */
#define XC_ISA avx2
#include "xc_kernels_isa.h"
