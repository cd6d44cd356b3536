/* exp_loop_rate.c: how fast one core runs the forward pass's inner loop with no memory in the way,
 * for issue 21's question "is the forward pass bound by the memory or by the core?".
 *
 * The loop is the online pass's (src_c/xc_row_ops.inc, exp_lanes): XC_LANES accumulators, each
 * adding xc_expf_nonpos(z - m) (src_c/xc_math.h, the kernels' own exp), over one block of
 * XC_ONLINE_BLOCK float32 logits that stays in L1, taken again and again. Nothing is loaded from
 * L2 or memory, no row is set up, no max is taken: the time per logit is a floor under the
 * kernel's. Its logits per second, times 4 bytes, is the most read bandwidth one core running the
 * forward pass could use; the benchmark's probe says how much the machine gives (python -m
 * xentc.bench, "read" at --threads 1 and 2).
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

#define LANES 32  /* XC_LANES of float32: 128 bytes */
#define BLOCK 512 /* XC_ONLINE_BLOCK */

/* noinline: the compiler must not see the block's values, nor hoist the sum out of the timing */
__attribute__((noinline)) static float block_sum(const float *z, float m)
{
    float acc[LANES];
    for (int l = 0; l < LANES; l++)
        acc[l] = m - m;
    for (int j = 0; j < BLOCK; j += LANES)
        for (int l = 0; l < LANES; l++)
            acc[l] += xc_expf_nonpos(z[j + l] - m);
    float total = 0.0f;
    for (int l = 0; l < LANES; l++)
        total += acc[l];
    return total;
}

static double seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(void)
{
    static float z[BLOCK];
    uint32_t state = 1;
    for (int i = 0; i < BLOCK; i++) { /* logits in [-10, 10), shifted by their max below */
        state = state * 1664525u + 1013904223u;
        z[i] = ((float)(state >> 8) / 16777216.0f - 0.5f) * 20.0f;
    }
    const int calls = 4000, repeats = 200;
    double best = 1e30;
    volatile float sink = 0.0f;
    for (int r = 0; r < repeats; r++) {
        const double start = seconds();
        for (int c = 0; c < calls; c++)
            sink = block_sum(z, 10.0f);
        const double elapsed = seconds() - start;
        best = elapsed < best ? elapsed : best;
    }
    const double ns = 1e9 * best / ((double)calls * BLOCK);
    printf("exp loop from L1: %.3f ns a logit (min of %d x %d blocks of %d): one core could read "
           "at most %.1f GB/s of float32 logits in the forward pass (sum %g)\n",
           ns, repeats, calls, BLOCK, 4.0 / ns, (double)sink);
    return 0;
}
