/* xc_kernels.h: one (instruction set, dtype) instance of the kernels: what each translation unit
 * xc_<dtype>_<isa>.c includes, once, after defining
 *   XC_F32 or XC_F64       the logits' dtype (the float32 kernels also run 16-bit logits)
 *   XC_NAME(op)            the exported name of op, e.g. xc_##op##_f32_avx2
 * Only the exported entry points (xc_xent_, xc_xent_backward_, xc_lse_rows_, xc_softmax_rows_,
 * xc_shard_stats_, xc_shard_grad_, xc_math_array_ + dtype + isa; xc_dispatch.c's table) carry
 * the suffix: every helper is static, and a translation unit holds one dtype, so helpers need no
 * per-dtype names. The ISA files differ in their compiler flags only (setup.py builds the two
 * dtypes of one ISA as one static library with that ISA's flags).
 *
 * The kernels, one source per algorithm, in the order they build on each other:
 *   xc_row_ops.inc     reductions over a contiguous row, the online max + sum-exp pass, the
 *                      gradient writer, the loads (gather, 16-bit, logit transform), workspace
 *   xc_row_loss.inc    a row's loss and gradient coefficients: every formula, once
 *   xc_whole_rows.inc  a row start to finish on one thread (rows up to L2 keep their terms)
 *   xc_short_rows.inc  C <= 128 with index targets: XC_LANES rows across the SIMD lanes
 *   xc_split_rows.inc  few long rows: (row, chunk) tasks shared by the threads, merged exactly
 *   xc_xent.inc        xc_xent_<dtype>: the row blocks, and which algorithm runs a call
 *   xc_backward.inc    xc_xent_backward_<dtype>: the gradient alone, from a kept lse
 *   xc_softmax.inc     log-sum-exp, softmax and log-softmax of rows
 *   xc_shard.inc       the statistics and gradient of one block of a row's classes */
#ifndef XC_KERNELS_H
#define XC_KERNELS_H

#include <math.h>
#include <stdlib.h>
#if defined(__SSE2__) || defined(_M_X64)
#include <immintrin.h>
#endif

#include "xc_api.h"
#include "xc_half.h"
#include "xc_math.h"
#include "xc_rows.h"

#if defined(XC_F32) && !defined(XC_F64)
#define XC_REAL       float
#define XC_EXP        xc_expf        /* the vectorisable exp of xc_math.h for XC_REAL, and */
#define XC_EXP_NONPOS xc_expf_nonpos /* its shorter twin for arguments <= 0 */
#define XC_TANH       xc_tanhf       /* the vectorisable tanh (the soft-cap) */
#elif defined(XC_F64) && !defined(XC_F32)
#define XC_REAL       double
#define XC_EXP        xc_exp
#define XC_EXP_NONPOS xc_exp_nonpos
#define XC_TANH       xc_tanh
#else
#error "define exactly one of XC_F32 and XC_F64 before including xc_kernels.h"
#endif
#ifndef XC_NAME
#error "define XC_NAME(op) before including xc_kernels.h"
#endif

/* Independent accumulators per sum: 4 vectors of 512 bits (float) or 2 (double), enough to hide
 * the add latency, and a fixed number, so the summation order does not depend on the ISA. */
#define XC_LANES (128 / (int)sizeof(XC_REAL))

/* Unroll the next loop 4 times where the compiler takes the hint (gcc and clang read GCC's
 * pragma; the vectoriser keeps the count for the vector loop). Elsewhere, a plain loop. */
#if defined(__GNUC__)
#define XC_UNROLL4 _Pragma("GCC unroll 4")
#else
#define XC_UNROLL4
#endif

/* How far ahead of the exp loop its logits are prefetched: 2 cache lines per lane group of 128
 * bytes. A row block (XC_ONLINE_BLOCK) is 2 KiB in float32, so this is two blocks on. At 4 KiB,
 * (2048, 32000) float32 forward, AVX2 Zen 3, one thread, logits from DRAM: 0.90-0.99 -> 0.60-0.69
 * ns per logit; 2 threads 0.44 -> 0.33-0.35 (1 KiB and 8 KiB gained less). */
#define XC_PREFETCH_BYTES 4096

#include "xc_row_ops.inc"
#include "xc_row_loss.inc"
#include "xc_whole_rows.inc"
#include "xc_short_rows.inc"
#include "xc_split_rows.inc"
#include "xc_xent.inc"
#include "xc_backward.inc"
#include "xc_softmax.inc"
#include "xc_shard.inc"

#endif /* XC_KERNELS_H */
