/* xc_f32_avx2.c: the float32 (and 16-bit logits) kernels for x86-64 CPUs with AVX2, FMA and F16C
 * (Haswell, Zen 1 and later), used only when xc_cpu.c finds all three usable. Flags: the
 * baseline's + -mavx2 -mfma -mf16c. Nothing else differs between the (ISA, dtype) files:
 * xc_kernels.h holds the kernels. */
#define XC_F32
#define XC_NAME(op) xc_##op##_f32_avx2
#include "xc_kernels.h"
