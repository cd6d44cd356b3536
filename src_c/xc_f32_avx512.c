/* xc_f32_avx512.c: the float32 (and 16-bit logits) kernels for x86-64 CPUs with AVX-512 F, DQ, BW
 * and VL (Skylake-SP, Ice Lake, Zen 4 and later). Flags: the baseline's + -mavx512f -mavx512dq
 * -mavx512bw -mavx512vl -mfma -mf16c -mprefer-vector-width=512 (gcc's generic tuning would
 * otherwise stay at 256-bit vectors). Nothing else differs between the (ISA, dtype) files:
 * xc_kernels.h holds the kernels. */
#define XC_F32
#define XC_NAME(op) xc_##op##_f32_avx512
#include "xc_kernels.h"
