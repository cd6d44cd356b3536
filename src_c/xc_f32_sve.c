/* xc_f32_sve.c: the float32 (and 16-bit logits) kernels for aarch64 CPUs with SVE (Graviton 3
 * and 4, NVIDIA Grace, Fujitsu A64FX), used only when xc_cpu.c finds HWCAP_SVE. Flags: the
 * baseline's + -march=armv8.2-a+sve (every SVE CPU implements ARMv8.2): gcc vectorises the same
 * loops vector-length agnostically (predicated loops, no scalar tails), so one build runs at 128,
 * 256 or 512 bits. The sums' order within a vector then depends on the vector length: results
 * may differ between lengths in the last bits (within the spec), never between thread counts.
 * float16 logits convert in hardware (XC_AARCH64_F16_HW), as in the neon build. Nothing else
 * differs between the (ISA, dtype) files: xc_kernels.h holds the kernels. */
#define XC_F32
#define XC_AARCH64_F16_HW
#define XC_NAME(op) xc_##op##_f32_sve
#include "xc_kernels.h"
