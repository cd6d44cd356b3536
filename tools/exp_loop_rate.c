/* exp_loop_rate.c: how fast one core runs the forward pass's inner loop with no memory in the way,
 * for issue 21's question "is the forward pass bound by the memory or by the core?".
 *
 * The loop is the online pass's (src_c/xc_row_ops.inc, exp_lanes): XC_LANES accumulators, each
 * adding xc_expf_nonpos(z - m) (xc_exp_nonpos for float64; src_c/xc_math.h, the kernels' own
 * exp), over one block of XC_ONLINE_BLOCK logits that stays in L1, taken again and again.
 * Nothing is loaded from L2 or memory, no row is set up, no max is taken: the time per logit is
 * a floor under the kernel's. Its logits per second, times 4 (float64: 8) bytes, is the most
 * read bandwidth one core running the forward pass could use; the benchmark's probe says how
 * much the machine gives (python -m xentc.bench, "read" at --threads 1 and 2).
 *
 * Build and run with the kernels' flags for an instruction set (base, avx2, avx512):
 *   gcc $(python3 tools/kernel_flags.py common) $(python3 tools/kernel_flags.py avx2) \
 *       -Isrc_c tools/exp_loop_rate.c -o /tmp/exp_loop_rate && /tmp/exp_loop_rate
 * The minimum over many repetitions is printed: on a shared machine the other work only adds. */
#define _POSIX_C_SOURCE 199309L /* clock_gettime under -std=c99 */
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "xc_math.h"

#define BLOCK 512 /* XC_ONLINE_BLOCK */

/* The loop for a real type, its accumulators 128 bytes of lanes as XC_LANES, over one block.
 * noinline: the compiler must not see the block's values, nor hoist the sum out of the timing. */
#define BLOCK_SUM(name, real, exp_nonpos)                                                          \
    __attribute__((noinline)) static real name(const real *z, real m)                              \
    {                                                                                              \
        enum { lanes = 128 / sizeof(real) };                                                       \
        real acc[lanes];                                                                           \
        for (int l = 0; l < lanes; l++)                                                            \
            acc[l] = m - m;                                                                        \
        for (int j = 0; j < BLOCK; j += lanes)                                                     \
            for (int l = 0; l < lanes; l++)                                                        \
                acc[l] += exp_nonpos(z[j + l] - m);                                                \
        real total = 0;                                                                            \
        for (int l = 0; l < lanes; l++)                                                            \
            total += acc[l];                                                                       \
        return total;                                                                              \
    }
BLOCK_SUM(block_sum_f32, float, xc_expf_nonpos)
BLOCK_SUM(block_sum_f64, double, xc_exp_nonpos)

static double seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The minimum time of `calls` blocks, in ns a logit. */
#define TIME_BLOCKS(sum, z, calls, repeats, ns)                                                    \
    do {                                                                                           \
        double best_ = 1e30;                                                                       \
        for (int r_ = 0; r_ < (repeats); r_++) {                                                   \
            const double start_ = seconds();                                                       \
            for (int c_ = 0; c_ < (calls); c_++)                                                   \
                sink += (double)sum(z, 10);                                                        \
            const double elapsed_ = seconds() - start_;                                            \
            best_ = elapsed_ < best_ ? elapsed_ : best_;                                           \
        }                                                                                          \
        (ns) = 1e9 * best_ / ((double)(calls) * BLOCK);                                            \
    } while (0)

int main(void)
{
    static float z32[BLOCK];
    static double z64[BLOCK];
    uint32_t state = 1;
    for (int i = 0; i < BLOCK; i++) { /* logits in [-10, 10), shifted by 10 (their max) */
        state = state * 1664525u + 1013904223u;
        z64[i] = ((double)(state >> 8) / 16777216.0 - 0.5) * 20.0;
        z32[i] = (float)z64[i];
    }
    const int calls = 4000, repeats = 200;
    volatile double sink = 0.0;
    double ns32, ns64;
    TIME_BLOCKS(block_sum_f32, z32, calls, repeats, ns32);
    TIME_BLOCKS(block_sum_f64, z64, calls, repeats, ns64);
    printf("exp loop from L1, one core (min of %d x %d blocks of %d logits):\n", repeats, calls,
           BLOCK);
    printf("  float32: %.3f ns a logit: the forward pass could read at most %.1f GB/s a core\n",
           ns32, 4.0 / ns32);
    printf("  float64: %.3f ns a logit: the forward pass could read at most %.1f GB/s a core\n",
           ns64, 8.0 / ns64);
    return sink == 0.0; /* the sums are positive: 0, and so a failing status, means a broken exp */
}
