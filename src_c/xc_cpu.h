/* xc_cpu.h: which instruction sets this CPU and its OS let xentc use (xc_cpu.c). */
#ifndef XC_CPU_H
#define XC_CPU_H

/* Each is 1 when the CPU has every feature of the set AND the OS saves the registers it needs
 * (XCR0), since a CPU bit alone does not make the wide registers usable; 0 otherwise and on
 * non-x86 machines. */
int xc_cpu_has_avx2(void);   /* AVX, AVX2, FMA; XCR0 saves SSE and AVX state */
int xc_cpu_has_avx512(void); /* the above, AVX-512 F, DQ, BW, VL; XCR0 saves opmask and ZMM state */

/* aarch64 (Linux: the kernel's hwcaps, getauxval(AT_HWCAP), which also say that the kernel saves
 * the registers); 0 on other machines. */
int xc_cpu_has_neon(void); /* Advanced SIMD and FP (every aarch64 CPU, checked all the same) */
int xc_cpu_has_sve(void);  /* the above and SVE, any vector length */

#endif /* XC_CPU_H */
