/* xc_f32_neon.c: the float32 (and 16-bit logits) kernels for aarch64 CPUs with Advanced SIMD
 * (NEON: every aarch64 CPU), chosen when xc_cpu.c finds no SVE. Flags: the baseline's +
 * -mtune=neoverse-n1 (no instruction beyond ARMv8.0: the tuning only schedules and unrolls for
 * Neoverse N1 / Graviton 2 class cores). Beyond the baseline, float16 logits convert in hardware
 * (XC_AARCH64_F16_HW: xc_half.h's FCVTL / FCVTN), as F16C does on x86-64. Nothing else differs
 * between the (ISA, dtype) files: xc_kernels.h holds the kernels. */
#define XC_F32
#define XC_AARCH64_F16_HW
#define XC_NAME(op) xc_##op##_f32_neon
#include "xc_kernels.h"
