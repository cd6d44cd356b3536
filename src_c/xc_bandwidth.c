/* xc_bandwidth.c: the memory-bandwidth kernels of the benchmark report (python -m xentc.bench).
 *
 * Cross-entropy over large logits is memory-bound, so the report states each kernel's speed as a
 * fraction of what this machine can move at the same thread count, measured in the same run:
 *   read: sum every element once (the bytes a forward pass must read);
 *   copy: read every element and write it elsewhere (the bytes loss+gradient must move).
 * Both split the array in equal contiguous slices, one per thread, as the cross-entropy kernels'
 * row blocks do. Compiled at the baseline flags with OpenMP when the build has it. */
#include <string.h>

#include "xc_api.h"
#include "xc_config.h"

#define XC_BW_LANES 32

/* Sum of x[0..n): the result only keeps the compiler from dropping the loads. */
double xc_bandwidth_read(const float *x, int64_t n, int n_threads)
{
    double total = 0.0;
#pragma omp parallel num_threads(n_threads) reduction(+ : total) if (n_threads > 1)
    {
        const int64_t team = omp_get_num_threads(), t = omp_get_thread_num();
        const int64_t begin = n * t / team, end = n * (t + 1) / team;
        float acc[XC_BW_LANES] = {0};
        int64_t j = begin;
        for (; j + XC_BW_LANES <= end; j += XC_BW_LANES)
            for (int l = 0; l < XC_BW_LANES; l++)
                acc[l] += x[j + l];
        for (; j < end; j++)
            acc[0] += x[j];
        for (int l = 0; l < XC_BW_LANES; l++)
            total += acc[l];
    }
    return total;
}

/* dst[0..n) = src[0..n), each thread copying its slice with the C library's memcpy (which picks
 * streaming stores for large copies where the library finds them faster). */
void xc_bandwidth_copy(const float *src, float *dst, int64_t n, int n_threads)
{
#pragma omp parallel num_threads(n_threads) if (n_threads > 1)
    {
        const int64_t team = omp_get_num_threads(), t = omp_get_thread_num();
        const int64_t begin = n * t / team, end = n * (t + 1) / team;
        memcpy(dst + begin, src + begin, (size_t)(end - begin) * sizeof(float));
    }
}
