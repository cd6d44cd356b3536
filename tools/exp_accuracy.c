/* tools/exp_accuracy.c: the ulp error of xc_math.h's double exp against long double (glibc expl),
 * 10^7 uniform arguments each over the normal-result domain, [-708.39, 0] (xc_exp_nonpos, the
 * kernels' case) and [-1, 1]; the loops vectorise as in the kernels. The figures of xc_math.h's
 * accuracy note. Build and run at each ISA's flags, e.g.
 *   gcc -O3 -mavx2 -mfma -Isrc_c tools/exp_accuracy.c -o /tmp/exp_accuracy -lm && /tmp/exp_accuracy
 * (and with -O3 alone for the baseline build). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <math.h>
#include "xc_math.h"
#define N 10000000
static double x[N], y[N];
static void report(const char *name)
{
    double mx = 0, sum = 0, worst = 0;
    for (int i = 0; i < N; i++) {
        long double e = expl((long double)x[i]);
        double ed = (double)e;
        double ulp = nextafter(ed, INFINITY) - ed;
        double err = (double)fabsl((long double)y[i] - e) / ulp;
        sum += err;
        if (err > mx) {
            mx = err;
            worst = x[i];
        }
    }
    printf("%-12s max %.3f ulp (x = %.17g) mean %.4f\n", name, mx, worst, sum / N);
}
int main(void)
{
    uint64_t s = 12345;
    for (int i = 0; i < N; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        x[i] = -708.39 + (709.436 + 708.39) * ((s >> 11) * 0x1p-53);
    }
    for (int i = 0; i < N; i++)
        y[i] = xc_exp(x[i]);
    report("xc_exp");
    for (int i = 0; i < N; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        x[i] = -708.39 * ((s >> 11) * 0x1p-53);
    }
    for (int i = 0; i < N; i++)
        y[i] = xc_exp_nonpos(x[i]);
    report("xc_exp_nonpos");
    for (int i = 0; i < N; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        x[i] = -1.0 + 2.0 * ((s >> 11) * 0x1p-53);
    }
    for (int i = 0; i < N; i++)
        y[i] = xc_exp(x[i]);
    report("xc_exp[-1,1]");
    return 0;
}
