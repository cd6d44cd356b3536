/* xc_cpu.c: CPUID and XCR0 checks (x86-64), hwcaps (aarch64), for the instruction sets of the
 * kernel table (xc_dispatch.c). Compiled at baseline flags: it runs on every CPU, before any wider
 * code is chosen. */
#include "xc_cpu.h"

#include <stdint.h>

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__) || defined(_M_IX86)

#if defined(_MSC_VER) && !defined(__clang__)
#include <intrin.h>
static int cpuid(unsigned leaf, unsigned sub, unsigned regs[4])
{
    int max_info[4], info[4];
    __cpuid(max_info, (int)(leaf & 0x80000000u));
    if ((unsigned)max_info[0] < leaf)
        return 0;
    __cpuidex(info, (int)leaf, (int)sub);
    for (int k = 0; k < 4; k++)
        regs[k] = (unsigned)info[k];
    return 1;
}
static uint64_t xcr0(void) { return _xgetbv(0); }
#else
#include <cpuid.h>
static int cpuid(unsigned leaf, unsigned sub, unsigned regs[4])
{
    if (__get_cpuid_max(leaf & 0x80000000u, 0) < leaf)
        return 0;
    __cpuid_count(leaf, sub, regs[0], regs[1], regs[2], regs[3]);
    return 1;
}
/* xgetbv by opcode, so this file needs no -mxsave; call it only when OSXSAVE is set. */
static uint64_t xcr0(void)
{
    uint32_t lo, hi;
    __asm__ volatile(".byte 0x0f, 0x01, 0xd0" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}
#endif

#define BIT(n) (1u << (n))

int xc_cpu_has_avx2(void)
{
    unsigned r1[4], r7[4];
    /* CPUID.1:ECX  FMA (12), OSXSAVE (27), AVX (28), F16C (29: the float16 conversions of
     * xc_half.h, compiled with -mf16c into the avx2 and avx512 kernels) */
    const unsigned need1 = BIT(12) | BIT(27) | BIT(28) | BIT(29);
    if (!cpuid(1, 0, r1) || (r1[2] & need1) != need1)
        return 0;
    if ((xcr0() & 0x6) != 0x6) /* XMM and YMM state */
        return 0;
    return cpuid(7, 0, r7) && (r7[1] & BIT(5)) != 0; /* CPUID.7.0:EBX AVX2 (5) */
}

int xc_cpu_has_avx512(void)
{
    unsigned r7[4];
    /* CPUID.7.0:EBX  AVX512F (16), AVX512DQ (17), AVX512BW (30), AVX512VL (31) */
    const unsigned need7 = BIT(16) | BIT(17) | BIT(30) | BIT(31);
    if (!xc_cpu_has_avx2() || !cpuid(7, 0, r7) || (r7[1] & need7) != need7)
        return 0;
    return (xcr0() & 0xE6) == 0xE6; /* XMM, YMM, opmask, ZMM_Hi256, Hi16_ZMM state */
}

#else /* not x86 */

int xc_cpu_has_avx2(void) { return 0; }
int xc_cpu_has_avx512(void) { return 0; }

#endif

#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
/* The bits of <asm/hwcap.h>, spelled out so that an older libc's headers suffice. */
#define XC_HWCAP_FP    (1ul << 0)
#define XC_HWCAP_ASIMD (1ul << 1)
#define XC_HWCAP_SVE   (1ul << 22)

int xc_cpu_has_neon(void)
{
    const unsigned long need = XC_HWCAP_FP | XC_HWCAP_ASIMD;
    return (getauxval(AT_HWCAP) & need) == need;
}

/* The SVE kernels are vector-length agnostic: any length the kernel gives the process will do. */
int xc_cpu_has_sve(void) { return xc_cpu_has_neon() && (getauxval(AT_HWCAP) & XC_HWCAP_SVE) != 0; }

#else /* not aarch64 Linux (setup.py builds these sets there only): baseline only */

int xc_cpu_has_neon(void) { return 0; }
int xc_cpu_has_sve(void) { return 0; }

#endif
