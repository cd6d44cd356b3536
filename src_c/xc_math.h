/* xc_math.h: exp for float and double, written so that gcc vectorises the loops that call it.
 *
 * Included by xc_kernels.inc (and so compiled once per instruction set, at that file's flags).
 * No libm call, no branch, no table: the range reduction and the polynomial are plain arithmetic
 * and the special cases are selects, which the vectoriser turns into blends.
 *
 *   exp(x) = 2^n * exp(r),  n = round(x / ln 2),  r = x - n ln 2 (ln 2 split in a high part with
 *   trailing zero bits, so n * LN2_HI is exact, and a low part),  |r| <= ln(2)/2,
 *   exp(r) by its Taylor series to r^7 (float: truncation 5e-9 relative) or r^13 (double: 4e-19),
 *   evaluated as (1 + r) + r^2 q(r) with q by Estrin's scheme (see xc_expf_core),
 *   2^n built from its exponent bits.
 *
 * Domain: the kernels only take exp of z - max <= 0 (a row with a non-finite max, where the
 * shift is 0, ends as inf or NaN whatever exp returns), so two cheap simplifications hold:
 * results that would be subnormal are flushed to +0 (x below ln(FLT_MIN) ~ -87.34, ln(DBL_MIN) ~
 * -708.40: such terms cannot change a row sum >= 1, and a masked class's gradient stays exactly 0),
 * and x above 127.5 ln 2 ~ 88.38 (1023.5 ln 2 ~ 709.44) gives +inf, though exp is finite up to
 * 88.72 (709.78): the 2^n scale then fits in one exponent field with no second step.
 * NaN -> NaN (both clamps compare false and keep it); exp(0) == 1 exactly (n = 0, r = 0).
 *
 * Accuracy over 10^7 uniform arguments of the whole normal-result domain, against NumPy's
 * float64 exp: at most 1.33 ulp for float, 1.00 ulp for double, on the baseline, AVX2 and AVX-512
 * builds alike (tests/test_build.py::test_exp_accuracy asserts <= 2 ulp under each). */
#ifndef XC_MATH_H
#define XC_MATH_H

#include <math.h>
#include <string.h>

#include "xc_config.h"

/* Rounding to the nearest integer by adding 1.5 * 2^23 (2^52): the sum's low mantissa bits are
 * then n itself, so the bits give 2^n without a float->int conversion. */
#define XC_F32_SHIFTER 12582912.0f            /* 0x1.8p23 */
#define XC_F64_SHIFTER 6755399441055744.0     /* 0x1.8p52 */

/* 2^n exp(r) for x already clamped to [lo, hi] (NaN passes through as NaN). */
XC_INLINE float xc_expf_core(float x)
{
    float t = x * 1.44269504f + XC_F32_SHIFTER;
    float n = t - XC_F32_SHIFTER;
    float r = x - n * 0.693145752f;          /* LN2_HI: 0x1.62e4p-1, 16 significant bits */
    r = r - n * 1.42860677e-06f;             /* LN2_LO: ln 2 - LN2_HI */
    /* exp(r) = (1 + r) + r^2 q(r), q = sum_{k=2..7} r^(k-2) / k! by Estrin's scheme: the
     * dependency chain is 4 operations deep instead of Horner's 7, so the FMA units are not left
     * waiting on one chain (the row loops were latency-bound); 1 + r is kept apart from q so the
     * large terms are rounded once, at the end. */
    const float r2 = r * r, r4 = r2 * r2;
    const float q01 = 0.5f + r * (1.0f / 6.0f), q23 = 1.0f / 24.0f + r * (1.0f / 120.0f);
    const float q45 = 1.0f / 720.0f + r * (1.0f / 5040.0f);
    const float q = (q01 + r2 * q23) + r4 * q45;
    const float p = (1.0f + r) + r2 * q;
    int32_t bits;
    memcpy(&bits, &t, sizeof bits);
    /* t's low bits hold n + 2^22; move n into the exponent field (bias 127). |n| <= 127 here. */
    int32_t ebits = (bits - 0x4B400000 + 127) << 23;
    float scale;
    memcpy(&scale, &ebits, sizeof scale);
    return p * scale;
}

XC_INLINE double xc_exp_core(double x)
{
    double t = x * 1.4426950408889634 + XC_F64_SHIFTER;
    double n = t - XC_F64_SHIFTER;
    double r = x - n * 0.6931471803691238;   /* LN2_HI: 0x1.62e42fee00000p-1 */
    r = r - n * 1.9082149292705877e-10;      /* LN2_LO */
    /* as xc_expf_core: (1 + r) + r^2 q(r), q = sum_{k=2..13} r^(k-2) / k! by Estrin's scheme */
    const double r2 = r * r, r4 = r2 * r2, r8 = r4 * r4;
    const double q01 = 0.5 + r * (1.0 / 6.0), q23 = 1.0 / 24.0 + r * (1.0 / 120.0);
    const double q45 = 1.0 / 720.0 + r * (1.0 / 5040.0), q67 = 1.0 / 40320.0 + r * (1.0 / 362880.0);
    const double q89 = 1.0 / 3628800.0 + r * (1.0 / 39916800.0);
    const double q1011 = 1.0 / 479001600.0 + r * (1.0 / 6227020800.0);
    const double q = ((q01 + r2 * q23) + r4 * (q45 + r2 * q67)) + r8 * (q89 + r2 * q1011);
    const double p = (1.0 + r) + r2 * q;
    int64_t bits;
    memcpy(&bits, &t, sizeof bits);
    int64_t ebits = (bits - 0x4338000000000000LL + 1023) << 52;
    double scale;
    memcpy(&scale, &ebits, sizeof scale);
    return p * scale;
}

#define XC_F32_LO -87.33654f          /* exp(lo) ~ FLT_MIN: below it, +0 */
#define XC_F32_HI 88.37626f           /* 127.5 ln 2: above it n would be 128; +inf */
#define XC_F64_LO -708.3964185322641  /* exp(lo) ~ DBL_MIN */
#define XC_F64_HI 709.4361393031      /* 1023.5 ln 2 */

/* exp over the whole documented domain (the clamps compare false for NaN and keep it). */
XC_INLINE float xc_expf(float x)
{
    float xc = x < XC_F32_LO ? XC_F32_LO : x;
    xc = xc > XC_F32_HI ? XC_F32_HI : xc;
    float y = xc_expf_core(xc);
    y = x < XC_F32_LO ? 0.0f : y;
    return x > XC_F32_HI ? INFINITY : y;
}

XC_INLINE double xc_exp(double x)
{
    double xc = x < XC_F64_LO ? XC_F64_LO : x;
    xc = xc > XC_F64_HI ? XC_F64_HI : xc;
    double y = xc_exp_core(xc);
    y = x < XC_F64_LO ? 0.0 : y;
    return x > XC_F64_HI ? (double)INFINITY : y;
}

/* exp(x) for x <= 0 or NaN only: the row kernels' hot case, x = z - max. Without the upper clamp
 * and the overflow select it is two operations shorter per element; positive x gives garbage. */
XC_INLINE float xc_expf_nonpos(float x)
{
    float y = xc_expf_core(x < XC_F32_LO ? XC_F32_LO : x);
    return x < XC_F32_LO ? 0.0f : y;
}

XC_INLINE double xc_exp_nonpos(double x)
{
    double y = xc_exp_core(x < XC_F64_LO ? XC_F64_LO : x);
    return x < XC_F64_LO ? 0.0 : y;
}

#endif /* XC_MATH_H */
