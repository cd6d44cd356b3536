/* xc_f32_neon.c: the float32 (and 16-bit logits) kernels for aarch64 CPUs with Advanced SIMD
 * (NEON: every aarch64 CPU), chosen when xc_cpu.c finds no SVE. Flags: the baseline's, which on
 * aarch64 vectorise with NEON already; what this set adds is float16 logits converted in hardware
 * (XC_AARCH64_F16_HW: xc_half.h's FCVTL / FCVTN, ARMv8.0), as F16C does on x86-64. Nothing else
 * differs between the (ISA, dtype) files: xc_kernels.h holds the kernels. */
#define XC_F32
#define XC_AARCH64_F16_HW
#define XC_NAME(op) xc_##op##_f32_neon
#include "xc_kernels.h"
