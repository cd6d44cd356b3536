/* xc_f64_neon.c: the float64 kernels for aarch64 CPUs with Advanced SIMD (NEON: every aarch64
 * CPU), chosen when xc_cpu.c finds no SVE. Flags: the baseline's (the float64 kernels have no
 * 16-bit logits, so they are the baseline's code: a set is one table of both dtypes). Nothing else
 * differs between the (ISA, dtype) files: xc_kernels.h holds the kernels. */
#define XC_F64
#define XC_NAME(op) xc_##op##_f64_neon
#include "xc_kernels.h"
