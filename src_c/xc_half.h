/* xc_half.h: float16 and bfloat16 <-> float32, one value or a row at a time.
 *
 * Included by xc_kernels.h, so compiled at each instruction set's flags: the float32 kernels
 * load 16-bit logits through these (converting while they gather a row into scratch) and store
 * 16-bit gradients through them (xc_row_ops.inc's load_logits, xc_row_loss.inc's put_grad).
 *
 * float16 (IEEE binary16): with F16C (__F16C__: the avx2 and avx512 builds pass -mf16c, and
 * xc_cpu.c requires the CPU bit before choosing them) vcvtph2ps / vcvtps2ph, 8 values at a time;
 * the baseline build converts in portable C, bit for bit as F16C does: exact widening
 * (subnormals included), narrowing rounded to nearest even, overflow to inf, NaN kept NaN with its
 * quiet bit set (payload's top bits kept). The aarch64 neon and sve builds (XC_AARCH64_F16_HW,
 * defined by their translation units) convert with FCVTL / FCVTN, 8 values at a time: Advanced
 * SIMD has them since ARMv8.0 and rounds as F16C does (FPCR's default: to nearest even, no flush
 * to zero, a NaN made quiet with its payload's top bits). tests/test_build.py::test_half_rounding checks every
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
#elif defined(XC_AARCH64_F16_HW) && defined(__aarch64__)
#include <arm_neon.h>
#define XC_NEON_F16 1
#endif

/* ---- one value ------------------------------------------------------------------------------- */

XC_INLINE uint32_t xc_f32_bits(float f)
{
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    return bits;
}

XC_INLINE float xc_f32_from_bits(uint32_t bits)
{
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* The portable conversions compute every case and select one, with no branch, so that the row
 * loops below vectorise in the baseline build too (SSE2). The branchy version left them scalar:
 * (64, 32000) float16 loss + grad took 3.2x the float32 time there, 2.4x now (one thread,
 * tools/half_accuracy.py --speed). */
XC_INLINE float xc_f16_to_f32_soft(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t expo = h & 0x7C00u, mant = h & 0x3FFu;
    const uint32_t body = (uint32_t)(h & 0x7FFFu) << 13; /* exponent and mantissa, float places */
    const uint32_t normal = body + 0x38000000u;          /* exponent bias 15 -> 127 */
    /* inf, NaN: exponent all ones; a NaN gets its quiet bit, as vcvtph2ps sets it */
    const uint32_t special = (body + 0x70000000u) | (mant ? 0x00400000u : 0u);
    /* zero, subnormal: 2^-14 (1 + mant / 2^10) - 2^-14 = mant 2^-24, exact */
    const uint32_t subnormal = xc_f32_bits(xc_f32_from_bits(body + 0x38800000u) - 6.103515625e-05f);
    return xc_f32_from_bits(sign | (expo == 0x7C00u ? special : expo == 0 ? subnormal : normal));
}

XC_INLINE uint16_t xc_f32_to_f16_soft(float f)
{
    const uint32_t x = xc_f32_bits(f);
    const uint32_t sign = (x >> 16) & 0x8000u;
    const uint32_t a = x & 0x7FFFFFFFu;
    /* >= 2^-14, a normal float16: the 13 dropped bits rounded to nearest even (a carry moves into
     * the exponent, rightly), the exponent rebiased 127 -> 15 */
    const uint32_t normal = (a + 0xFFFu + ((a >> 13) & 1u) - 0x38000000u) >> 13;
    /* below 2^-14: m = |f| 2^24 (exact) rounded to an integer, to nearest even, by adding 2^23:
     * the sum's low bits are m (m = 1024 is the smallest normal's bits) */
    const uint32_t subnormal =
        xc_f32_bits(xc_f32_from_bits(a) * 16777216.0f + 8388608.0f) - 0x4B000000u;
    const uint32_t nan = 0x7E00u | ((a >> 13) & 0x1FFu); /* quiet, the payload's top bits kept */
    /* >= 65520 = 65504 + half an ulp: the tie goes to even, which is inf */
    const uint32_t h = a > 0x7F800000u    ? nan
                       : a >= 0x477FF000u ? 0x7C00u
                       : a >= 0x38800000u ? normal
                                          : subnormal;
    return (uint16_t)(sign | h);
}

XC_INLINE float xc_bf16_to_f32(uint16_t h) { return xc_f32_from_bits((uint32_t)h << 16); }

XC_INLINE uint16_t xc_f32_to_bf16(float f)
{
    const uint32_t x = xc_f32_bits(f);
    const uint32_t rounded = (x + 0x7FFFu + ((x >> 16) & 1u)) >> 16;
    const uint32_t quiet_nan = (x >> 16) | 0x40u;
    return (uint16_t)((x & 0x7FFFFFFFu) > 0x7F800000u ? quiet_nan : rounded);
}

#if defined(__F16C__)
#define XC_F16_TO_F32(h) _cvtsh_ss(h)
#define XC_F32_TO_F16(f) ((uint16_t)_cvtss_sh((f), _MM_FROUND_TO_NEAREST_INT))
#elif defined(XC_NEON_F16)
XC_INLINE float xc_f16_to_f32_hw(uint16_t h)
{
    return vgetq_lane_f32(vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(h))), 0);
}
XC_INLINE uint16_t xc_f32_to_f16_hw(float f)
{
    return vget_lane_u16(vreinterpret_u16_f16(vcvt_f16_f32(vdupq_n_f32(f))), 0);
}
#define XC_F16_TO_F32(h) xc_f16_to_f32_hw(h)
#define XC_F32_TO_F16(f) xc_f32_to_f16_hw(f)
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
#elif defined(XC_NEON_F16)
    if (step == 1)
        for (; j + 8 <= n; j += 8) {
            const float16x8_t h = vreinterpretq_f16_u16(vld1q_u16(src + j));
            vst1q_f32(dst + j, vcvt_f32_f16(vget_low_f16(h)));
            vst1q_f32(dst + j + 4, vcvt_high_f32_f16(h));
        }
#endif
    for (; j < n; j++)
        dst[j] = XC_F16_TO_F32(src[j * step]);
}

XC_INLINE void xc_f32_row_to_half(int kind, const float *XC_RESTRICT src, int64_t n, uint16_t *dst,
                                  int64_t step)
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
#elif defined(XC_NEON_F16)
    for (; j + 8 <= n; j += 8) {
        const uint16x8_t h = vreinterpretq_u16_f16(
            vcvt_high_f16_f32(vcvt_f16_f32(vld1q_f32(src + j)), vld1q_f32(src + j + 4)));
        if (step == 1) {
            vst1q_u16(dst + j, h);
        } else {
            uint16_t tmp[8];
            vst1q_u16(tmp, h);
            for (int l = 0; l < 8; l++)
                dst[(j + l) * step] = tmp[l];
        }
    }
#endif
    for (; j < n; j++)
        dst[j * step] = XC_F32_TO_F16(src[j]);
}

#endif /* XC_HALF_H */
