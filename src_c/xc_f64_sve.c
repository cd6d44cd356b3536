/* xc_f64_sve.c: the float64 kernels for aarch64 CPUs with SVE, used only when xc_cpu.c finds
 * HWCAP_SVE. Flags: the baseline's + -march=armv8.2-a+sve (vector-length agnostic; see
 * xc_f32_sve.c). Nothing else differs between the (ISA, dtype) files: xc_kernels.h holds the
 * kernels. */
#define XC_F64
#define XC_NAME(op) xc_##op##_f64_sve
#include "xc_kernels.h"
