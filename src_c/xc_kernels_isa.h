/* xc_kernels_isa.h: instantiates xc_kernels.inc for float32 and float64 under one instruction set.
 *
 * Included by xc_kernels_{base,avx2,avx512}.c, each of which defines XC_ISA (base | avx2 | avx512)
 * and is compiled with that set's flags (setup.py builds each as a static library with its own
 * cflags); this file is the same for all three, so the kernels differ only in what the compiler
 * makes of them. Exported names end in _<dtype>_<isa>, e.g. xc_xent_f32_avx512; xc_dispatch.c
 * picks one set at import. Each dtype gets xc_kernels.inc (whole rows) and xc_shard.inc (rows
 * split over class blocks), which shares its helpers. */
#include <math.h>
#include <stdlib.h>
#if defined(__SSE2__) || defined(_M_X64)
#include <immintrin.h>
#endif

#include "xc_api.h"
#include "xc_half.h"
#include "xc_math.h"
#include "xc_rows.h"

#define XC_ISA_CAT_(a, b) a##_##b
#define XC_ISA_CAT(a, b) XC_ISA_CAT_(a, b)

#define XC_REAL float
#define XC_SUFFIX XC_ISA_CAT(f32, XC_ISA)
#define XC_EXP xc_expf
#define XC_EXP_NONPOS xc_expf_nonpos
#define XC_TANH xc_tanhf
#include "xc_kernels.inc"
#include "xc_shard.inc"
#include "xc_kernels_undef.h"

#define XC_REAL double
#define XC_SUFFIX XC_ISA_CAT(f64, XC_ISA)
#define XC_EXP xc_exp
#define XC_EXP_NONPOS xc_exp_nonpos
#define XC_TANH xc_tanh
#include "xc_kernels.inc"
#include "xc_shard.inc"
#include "xc_kernels_undef.h"
