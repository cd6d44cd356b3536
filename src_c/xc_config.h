/* xc_config.h: compiler shims shared by every C file of xentc.
 *
 * Included first by the kernel and dispatch files. Gives a portable `restrict`, and stubs for the
 * three OpenMP calls the kernels use, so the same sources build serially when the compiler has no
 * OpenMP (setup.py then omits -fopenmp and _OPENMP stays undefined). */
#ifndef XC_CONFIG_H
#define XC_CONFIG_H

#include <stddef.h>
#include <stdint.h>

/* XC_FORCE_INLINE: always inlined, for the element functions of xc_math.h and the row loops
 * whose constant flags must fold away: a call left in a loop stops it vectorising (gcc left
 * xc_exp_core out of line in xent_short's lane loop), and a loop left out of line keeps its
 * flags as run-time tests (sum_exp_body: 7x the instructions). */
#if defined(_MSC_VER) && !defined(__clang__)
#define XC_RESTRICT     __restrict
#define XC_INLINE       static __inline
#define XC_FORCE_INLINE static __forceinline
#else
#define XC_RESTRICT     __restrict__
#define XC_INLINE       static inline
#define XC_FORCE_INLINE static inline __attribute__((always_inline))
#endif

/* XC_PREFETCH(p): ask for the cache line at p ahead of its load (read, keep in all levels). It
 * never faults, so it may point past the end of an array. */
#if defined(__GNUC__) || defined(__clang__)
#define XC_PREFETCH(p) __builtin_prefetch((const void *)(p), 0, 3)
#elif defined(_MSC_VER) && (defined(_M_X64) || defined(_M_IX86))
#include <xmmintrin.h>
#define XC_PREFETCH(p) _mm_prefetch((const char *)(p), _MM_HINT_T0)
#else
#define XC_PREFETCH(p) ((void)(p))
#endif

#ifdef _OPENMP
#include <omp.h>
#else
/* Serial build: one thread, thread number 0. The pragmas are ignored by the compiler. */
static inline int omp_get_thread_num(void) { return 0; }
static inline int omp_get_num_threads(void) { return 1; }
static inline int omp_get_max_threads(void) { return 1; }
#endif

/* Status codes returned by every exported kernel (xc_api.h). */
#define XC_OK     0
#define XC_ENOMEM 1

#endif /* XC_CONFIG_H */
