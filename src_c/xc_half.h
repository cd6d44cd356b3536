/* xc_half.h: float16 and bfloat16 <-> float32, one value or a row at a time.
 *
 * Included by xc_kernels_isa.h, so compiled at each instruction set's flags: the float32 kernels
 * load 16-bit logits through these (converting while they gather a row into scratch) and store
 * 16-bit gradients through them (xc_kernels.inc, load_logits and put_grad).
 *
 * float16 (IEEE binary16): with F16C (__F16C__: the avx2 and avx512 builds pass -mf16c, and
 * xc_cpu.c requires the CPU bit before choosing them) vcvtph2ps / vcvtps2ph, 8 values at a time;
 * the baseline build converts in portable C, bit for bit as F16C does: exact widening
 * (subnormals included), narrowing rounded to nearest even, overflow to inf, NaN kept NaN with its
 * quiet bit set (payload's top bits kept). tests/test_build.py::test_half_rounding checks every
 * float16 value and 10^6 float32 values against NumPy under each instruction set.
 * bfloat16 (the top half of a float32's bits) is the same plain C everywhere: widening is a
 * 16-bit shift, narrowing rounds to nearest even, a NaN stays a quiet NaN (it could otherwise
 * round to inf). Both loops vectorise. */
#ifndef XC_HALF_H
#define XC_HALF_H

#include <string.h>

#include "xc_api.h"
#include "xc_config.h"

#if defined(__F16C__)
#include <immintrin.h>
#endif

/* ---- one value ------------------------------------------------------------------------------- */

XC_INLINE float xc_f16_to_f32_soft(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t expo = (h >> 10) & 0x1Fu, mant = h & 0x3FFu;
    uint32_t bits;
    if (expo == 0x1F) {
        bits = sign | 0x7F800000u | (mant << 13) | (mant ? 0x00400000u : 0u); /* inf, quiet NaN */
    } else if (expo == 0) {
        /* zero or subnormal: mant * 2^-24, exact in float32 (mant < 2^10) */
        const float v = (float)mant * 5.9604644775390625e-8f;
        memcpy(&bits, &v, sizeof bits);
        bits |= sign;
    } else {
        bits = sign | ((expo + 112u) << 23) | (mant << 13); /* exponent bias 15 -> 127 */
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

XC_INLINE uint16_t xc_f32_to_f16_soft(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    const uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    const uint32_t a = x & 0x7FFFFFFFu;
    if (a > 0x7F800000u) /* NaN: quiet, the payload's top 9 bits kept (as vcvtps2ph) */
        return (uint16_t)(sign | 0x7E00u | ((a >> 13) & 0x1FFu));
    if (a >= 0x477FF000u) /* >= 65520 = 65504 + half an ulp: the tie goes to even, inf */
        return (uint16_t)(sign | 0x7C00u);
    if (a >= 0x38800000u) { /* >= 2^-14: a normal float16 */
        /* round the 13 dropped bits to nearest even; a carry moves into the exponent, right */
        const uint32_t r = a + 0xFFFu + ((a >> 13) & 1u);
        return (uint16_t)(sign | ((r - 0x38000000u) >> 13)); /* exponent bias 127 -> 15 */
    }
    /* subnormal float16 (or 0): m = |f| 2^24 rounded to an integer, to nearest even by adding
     * and taking off 2^23 (exact scaling by 2^24; m = 1024 is the smallest normal's bits) */
    float t;
    memcpy(&t, &a, sizeof t);
    t = t * 16777216.0f;
    const float rounded = (t + 8388608.0f) - 8388608.0f;
    return (uint16_t)(sign | (uint16_t)rounded);
}

XC_INLINE float xc_bf16_to_f32(uint16_t h)
{
    const uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

XC_INLINE uint16_t xc_f32_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    const uint32_t rounded = (x + 0x7FFFu + ((x >> 16) & 1u)) >> 16;
    const uint32_t quiet_nan = (x >> 16) | 0x40u;
    return (uint16_t)((x & 0x7FFFFFFFu) > 0x7F800000u ? quiet_nan : rounded);
}

#if defined(__F16C__)
#define XC_F16_TO_F32(h) _cvtsh_ss(h)
#define XC_F32_TO_F16(f) ((uint16_t)_cvtss_sh((f), _MM_FROUND_TO_NEAREST_INT))
#else
#define XC_F16_TO_F32(h) xc_f16_to_f32_soft(h)
#define XC_F32_TO_F16(f) xc_f32_to_f16_soft(f)
#endif

/* ---- rows: src every `step` elements -> contiguous float, and back --------------------------- */

XC_INLINE void xc_half_row_to_f32(int kind, const uint16_t *src, int64_t step, int64_t n,
                                  float *XC_RESTRICT dst)
{
    int64_t j = 0;
    if (kind == XC_HALF_BF16) {
        for (; j < n; j++)
            dst[j] = xc_bf16_to_f32(src[j * step]);
        return;
    }
#if defined(__F16C__)
    if (step == 1)
        for (; j + 8 <= n; j += 8)
            _mm256_storeu_ps(dst + j, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + j))));
#endif
    for (; j < n; j++)
        dst[j] = XC_F16_TO_F32(src[j * step]);
}

XC_INLINE void xc_f32_row_to_half(int kind, const float *XC_RESTRICT src, int64_t n,
                                  uint16_t *dst, int64_t step)
{
    int64_t j = 0;
    if (kind == XC_HALF_BF16) {
        for (; j < n; j++)
            dst[j * step] = xc_f32_to_bf16(src[j]);
        return;
    }
#if defined(__F16C__)
    for (; j + 8 <= n; j += 8) {
        const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + j), _MM_FROUND_TO_NEAREST_INT);
        if (step == 1) {
            _mm_storeu_si128((__m128i *)(dst + j), h);
        } else {
            uint16_t tmp[8];
            _mm_storeu_si128((__m128i *)tmp, h);
            for (int l = 0; l < 8; l++)
                dst[(j + l) * step] = tmp[l];
        }
    }
#endif
    for (; j < n; j++)
        dst[j * step] = XC_F32_TO_F16(src[j]);
}

#endif /* XC_HALF_H */
