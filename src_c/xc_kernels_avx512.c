/* xc_kernels_avx512.c: the kernels for x86-64 CPUs with AVX-512 F, DQ, BW and VL (Skylake-SP,
 * Ice Lake, Zen 4 and later). Flags: -mavx512f -mavx512dq -mavx512bw -mavx512vl -mfma -mf16c
 * -mprefer-vector-width=512 (gcc's generic tuning would otherwise stay at 256-bit vectors). */
#define XC_ISA avx512
#include "xc_kernels_isa.h"
