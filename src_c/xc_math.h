/* xc_math.h: exp for float and double, written so that gcc vectorises the loops that call it.
 *
 * Included by xc_kernels.h (and so compiled once per instruction set, at that ISA's flags).
 * No libm call, no branch, no table: the range reduction and the polynomial are plain arithmetic
 * and the special cases are selects, which the vectoriser turns into blends.
 *
 *   exp(x) = 2^n * exp(r),  n = round(x / ln 2),  r = x - n ln 2 (ln 2 split in a high part with
 *   trailing zero bits, so n * LN2_HI is exact, and a low part),  |r| <= ln(2)/2,
 *   exp(r) by a minimax polynomial of degree 6 (float: 3.1e-9 relative, see xc_expf_core) or 11
 *   (double: 3.7e-18, see xc_exp_core), both evaluated as r + r^2 q(r), q by Horner's scheme,
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
 * float64 exp: at most 1.00 ulp for float (0.98 baseline, 1.00 AVX2 and AVX-512; mean 0.27);
 * for double, against long double, at most 1.00 ulp (mean 0.27; tools/exp_accuracy.c), on the
 * baseline and AVX2 builds alike (1.03 with the Taylor series of degree 13 before it)
 * (tests/test_build.py::test_exp_accuracy asserts <= 2 ulp under each). */
#ifndef XC_MATH_H
#define XC_MATH_H

#include <math.h>
#include <string.h>

#include "xc_config.h"

/* Rounding to the nearest integer by adding 1.5 * 2^23 (2^52): the sum's low mantissa bits are
 * then n itself, so the bits give 2^n without a float->int conversion. The shifters also carry
 * the exponent bias, 127 (1023): t's low bits are n + 127 and one shift makes them 2^n. */
#define XC_F32_SHIFTER 12583039.0f        /* 0x1.8p23 + 127 */
#define XC_F64_SHIFTER 6755399441056767.0 /* 0x1.8p52 + 1023 */

/* 2^n exp(r) for x already clamped to [lo, hi] (NaN passes through as NaN), computed as
 * 2^n + 2^n (exp(r) - 1): the final FMA rounds once, and the small term carries the
 * polynomial's rounding errors, so they reach the result scaled down.
 * exp(r) - 1 = r + r^2 q(r), q of degree 4 by Horner's scheme, its coefficients the minimax fit
 * of tools/fit_expf.py (relative error 3.1e-9 on |r| <= ln(2)/2, rounded to float32 there;
 * written with the 9 significant digits that give back the same float, not as hex literals,
 * which not every C compiler this builds with reads).
 * 14 vector operations per element with xc_expf_nonpos's clamp (gcc -O3, AVX2), where the r^7
 * Taylor series by Estrin's scheme with 1 + r apart took 18: 3 in the wider polynomial, 1 in
 * the bias added on its own; and more accurate (max 1.00 ulp instead of 1.33: the note above).
 * Horner's chain is one operation longer than Estrin's was (6 dependent operations from r, not
 * 5), which the row loops do not feel: they keep several lane groups in flight, and their limit
 * is the count of operations (callgrind, AVX2 build: forward 4.69 -> 3.92 instructions per logit
 * at (64, 32000), loss+gradient 5.78 -> 5.01). */
XC_FORCE_INLINE float xc_expf_core(float x)
{
    const float t = x * 1.44269504f + XC_F32_SHIFTER;
    const float n = t - XC_F32_SHIFTER;
    float r = x - n * 0.693145752f; /* LN2_HI: 0x1.62e4p-1, 16 significant bits */
    r = r - n * 1.42860677e-06f;    /* LN2_LO: ln 2 - LN2_HI */
    float q = 0.0013821352f;
    q = q * r + 0.00836867001f;
    q = q * r + 0.0416682586f;
    q = q * r + 0.166665211f;
    q = q * r + 0.49999994f;
    const float p = r + (r * r) * q;
    uint32_t bits;
    memcpy(&bits, &t, sizeof bits);
    /* t's bits are 0x4B400000 + n + 127, 0 <= n + 127 <= 254 here (n = 128 would make the
     * scale inf and 2^n + 2^n p NaN for p < 0; XC_F32_HI keeps n <= 127): the shift drops the
     * high part and leaves n + 127 in the exponent field. Unsigned: for a NaN x the shift
     * carries into the sign bit, undefined for a signed int (UBSan, the sanitizer build); the
     * result is NaN either way (p is NaN). */
    const uint32_t ebits = bits << 23;
    float scale;
    memcpy(&scale, &ebits, sizeof scale);
    return p * scale + scale;
}

XC_FORCE_INLINE double xc_exp_core(double x)
{
    double t = x * 1.4426950408889634 + XC_F64_SHIFTER;
    double n = t - XC_F64_SHIFTER;
    double r = x - n * 0.6931471803691238; /* LN2_HI: 0x1.62e42fee00000p-1 */
    r = r - n * 1.9082149292705877e-10;    /* LN2_LO */
    /* exp(r) - 1 = r + r^2 q(r), q of degree 9 by Horner's scheme, its coefficients the minimax
     * fit of tools/fit_exp.py (relative error 3.7e-18 on |r| <= ln(2)/2, a 30th of the last
     * bit's 1.1e-16). The Taylor series it replaces needed q of degree 11 for the same accuracy,
     * and Estrin's scheme 3 more operations for the powers r^4, r^8 and the pairs' sums: 12
     * vector operations for the polynomial now, 16 then. The longer chain (10 dependent
     * operations from r, not 6) the row loops do not feel, as for the float exp: they keep several
     * lane groups in flight and are limited by the count of operations (tools/callgrind_per_logit.py,
     * AVX2, (64, 32000) float64: forward 12.15 -> 9.69 instructions per logit, loss+gradient
     * 15.15 -> 12.88); as accurate (max 1.03 -> 1.00 ulp, mean 0.27 both, against long double:
     * the note at the top). 2^n + 2^n (exp(r) - 1) in one FMA as in xc_expf_core, where 1 + r apart and a
     * separate multiply by 2^n took two operations more and were less accurate. */
    const double r2 = r * r;
    double q = 2.5006907672022944e-08;
    q = q * r + 2.7630215747716044e-07;
    q = q * r + 2.7557559789050993e-06;
    q = q * r + 2.480149311730649e-05;
    q = q * r + 0.00019841269544282615;
    q = q * r + 0.0013888888943744565;
    q = q * r + 0.008333333333471448;
    q = q * r + 0.041666666666528684;
    q = q * r + 0.16666666666666463;
    q = q * r + 0.5000000000000011;
    const double p = r + r2 * q;
    uint64_t bits;
    memcpy(&bits, &t, sizeof bits);
    /* t's bits are 0x4338000000000000 + n + 1023, 0 <= n + 1023 <= 2046 (XC_F64_HI keeps n <=
     * 1023: x log2(e) = 1023.49999999999): the shift leaves n + 1023 in the exponent field */
    const uint64_t ebits = bits << 52;
    double scale;
    memcpy(&scale, &ebits, sizeof scale);
    return p * scale + scale;
}

#define XC_F32_LO -87.33654f         /* exp(lo) ~ FLT_MIN: below it, +0 */
#define XC_F32_HI 88.37626f          /* just below 127.5 ln 2 (x log2(e) = 127.49999): n <= 127 */
#define XC_F64_LO -708.3964185322641 /* exp(lo) ~ DBL_MIN */
#define XC_F64_HI 709.4361393031     /* 1023.5 ln 2 */

/* exp over the whole documented domain (the clamps compare false for NaN and keep it). */
XC_FORCE_INLINE float xc_expf(float x)
{
    float xc = x < XC_F32_LO ? XC_F32_LO : x;
    xc = xc > XC_F32_HI ? XC_F32_HI : xc;
    float y = xc_expf_core(xc);
    y = x < XC_F32_LO ? 0.0f : y;
    return x > XC_F32_HI ? INFINITY : y;
}

XC_FORCE_INLINE double xc_exp(double x)
{
    double xc = x < XC_F64_LO ? XC_F64_LO : x;
    xc = xc > XC_F64_HI ? XC_F64_HI : xc;
    double y = xc_exp_core(xc);
    y = x < XC_F64_LO ? 0.0 : y;
    return x > XC_F64_HI ? (double)INFINITY : y;
}

/* Clamps of the exp for arguments <= 0: at -127.4 ln 2 (-1023.4 ln 2) n is -127 (-1023), whose
 * exponent bits are all zero, so 2^n is +0 and the result an exact 0 with no select. */
#define XC_F32_NONPOS_LO -88.30699f
#define XC_F64_NONPOS_LO -709.3673285805

/* exp(x) for x <= 0 or NaN only: the row kernels' hot case, x = z - max. One clamp and nothing
 * else: below XC_F32_LO (XC_F64_LO) the result is 0 or, just below, subnormal (it is +0 from
 * xc_expf), which no row sum or gradient can tell apart; -inf gives exactly 0 (a masked class's
 * gradient stays 0). Four operations shorter per element than xc_expf; positive x gives garbage.
 * With the separate underflow select of xc_expf it took 3.5 % longer: (4, 32000) float32
 * forward at AVX-512, rows in cache, 0.338 -> 0.326 ns per logit (C micro-benchmark, min of 2000). */
XC_FORCE_INLINE float xc_expf_nonpos(float x)
{
    return xc_expf_core(x < XC_F32_NONPOS_LO ? XC_F32_NONPOS_LO : x);
}

XC_FORCE_INLINE double xc_exp_nonpos(double x)
{
    return xc_exp_core(x < XC_F64_NONPOS_LO ? XC_F64_NONPOS_LO : x);
}

/* log(x) for x > 0, finite and normal, or NaN (the kernels take the log of a row's sum of exp):
 * x = 2^k f with f in [sqrt(1/2), sqrt(2)), found from the bits, and
 *   log f = 2 atanh(u) = 2u (1 + u^2/3 + u^4/5 + ...),  u = (f - 1) / (f + 1),  |u| <= 0.1716,
 * ten terms of the series in u^2 (the next is below 2e-17 relative). f - 1 is exact; the division
 * rounds once. Like xc_exp, branch-free and table-free so that loops over rows vectorise
 * (xc_short_rows.inc, short_loss). Max error 2 ulp (xc_log1p: 4 ulp) over 10^7 arguments spread
 * over [2^-20, 2^20] (xc_log1p: [0, 1]) against glibc (tests/test_build.py::test_log_accuracy). */
XC_FORCE_INLINE double xc_log(double x)
{
    /* Unsigned 64-bit integer steps only (AVX2 has no 64-bit arithmetic shift and no int64 ->
     * double conversion, and either would keep the loops that call this scalar there). */
    uint64_t bits;
    memcpy(&bits, &x, sizeof bits);
    /* subtracting sqrt(1/2)'s bits makes the exponent field k, for f = x / 2^k in range;
     * 1024 added to it keeps it non-negative */
    const uint64_t k_biased = (bits - 0x3FE6A09E667F3BCDULL + (1024ULL << 52)) >> 52;
    const uint64_t fbits = bits - ((k_biased - 1024) << 52);
    double f;
    memcpy(&f, &fbits, sizeof f);
    /* k as a double: k_biased in the low mantissa bits of 2^52, then 2^52 + 1024 taken off */
    const uint64_t kbits = 0x4330000000000000ULL | k_biased;
    double kd;
    memcpy(&kd, &kbits, sizeof kd);
    kd -= 4503599627370496.0 + 1024.0;
    const double u = (f - 1.0) / (f + 1.0), u2 = u * u;
    double q = 1.0 / 21.0;
    q = 1.0 / 19.0 + u2 * q;
    q = 1.0 / 17.0 + u2 * q;
    q = 1.0 / 15.0 + u2 * q;
    q = 1.0 / 13.0 + u2 * q;
    q = 1.0 / 11.0 + u2 * q;
    q = 1.0 / 9.0 + u2 * q;
    q = 1.0 / 7.0 + u2 * q;
    q = 1.0 / 5.0 + u2 * q;
    q = 1.0 / 3.0 + u2 * q;
    /* k ln 2 with ln 2 split in a high part with trailing zero bits (k * LN2_HI exact) */
    const double r =
        kd * 0.6931471803691238 + (2.0 * u + (2.0 * u * u2 * q + kd * 1.9082149292705877e-10));
    return x == x ? r : x; /* NaN stays NaN (its bits would otherwise make a finite f) */
}

/* log(1 + x) for x >= 0 finite, accurate for tiny x: with v = 1 + x rounded,
 * log1p(x) = log(v) * x / (v - 1) (the quotient corrects v's rounding), and x itself when v == 1. */
XC_FORCE_INLINE double xc_log1p(double x)
{
    const double v = 1.0 + x;
    const double d = v - 1.0;
    const double r = xc_log(v) * (x / (d != 0.0 ? d : 1.0));
    return d != 0.0 ? r : x;
}

/* tanh for float and double: the Gemma 2 logit soft-cap, z'' = cap tanh(z' / cap)
 * (xc_row_ops.inc, transform_row). Branch-free, as the exp above, so the loops that call it
 * vectorise; both forms are computed and one is selected:
 *   |x| <  0.55: x + x s P(s), s = x^2: P a near-minimax polynomial of degree 4 (float) or 9
 *                (double), relative error of the fit 1.1e-9 and 2.0e-17 (weighted least squares
 *                with Lawson's reweighting, in 60-digit mpmath). Near 0, where 1 - exp(-2|x|)
 *                would cancel, this keeps every digit (tanh(x) = x for tiny x);
 *   |x| >= 0.55: (1 - u) / (1 + u), u = exp(-2|x|) <= e^-1.1 = 0.33 by the house exp for
 *                arguments <= 0: 1 - u >= 0.67, so u's error (<= 1.33 ulp) is not magnified.
 * The sign is put back with copysign (tanh(-0) = -0). NaN -> NaN; +-inf -> +-1 (u is then 0);
 * large |x| -> +-1 exactly.
 * Accuracy over 2 * 10^6 arguments, uniform in [-10, 10] and log-spread over [2^-30, 2^4] (both
 * signs), against long double tanh: at most 1.50 ulp for float, 1.57 ulp for double, on the
 * baseline, AVX2 and AVX-512 builds alike (tests/test_build.py::test_tanh_accuracy asserts <= 3 ulp
 * under each). The large form's error is mostly 1 + u's rounding (its ulp is twice the
 * result's). */
#define XC_TANH_POLY_MAX 0.55

XC_FORCE_INLINE float xc_tanhf(float x)
{
    const float a = fabsf(x), s = a * a;
    const float p = -0.333333179713575498f +
                    s * (0.133325979935555808f +
                         s * (-0.0538534178296238973f +
                              s * (0.0210758486854157543f + s * -0.00627971655581263174f)));
    const float small = a + a * (s * p);
    const float u = xc_expf_nonpos(-2.0f * a);
    const float large = (1.0f - u) / (1.0f + u);
    return copysignf(a < (float)XC_TANH_POLY_MAX ? small : large, x);
}

XC_FORCE_INLINE double xc_tanh(double x)
{
    const double a = fabs(x), s = a * a, s2 = s * s, s4 = s2 * s2;
    /* P by Estrin's scheme, as the exp's polynomial: a shorter dependency chain than Horner's */
    const double p01 = -0.33333333333332346215 + s * 0.13333333333172495021;
    const double p23 = -0.053968253877664000489 + s * 0.021869486008211014803;
    const double p45 = -0.0088631949088774628927 + s * 0.0035917226896445609889;
    const double p67 = -0.0014532304754196874092 + s * 0.00057917509817929290898;
    const double p89 = -0.00021036102095434153695 + s * 0.000051059880649581133692;
    const double p = (p01 + s2 * p23) + s4 * ((p45 + s2 * p67) + s4 * p89);
    const double small = a + a * (s * p);
    const double u = xc_exp_nonpos(-2.0 * a);
    const double large = (1.0 - u) / (1.0 + u);
    return copysign(a < XC_TANH_POLY_MAX ? small : large, x);
}

#endif /* XC_MATH_H */
