/* kernel_check.c: a C-level check of every kernel set compiled into it, against double and long
 * double references, for CI's aarch64 step (tools/aarch64/ci.sh): a static program, so qemu-user
 * runs it with no arm64 root and no Python. For each set the CPU (qemu's model) supports:
 *   - the fused loss, lse and gradient of xc_xent_f32 / _f64 over the three row algorithms
 *     (short rows C <= 128, whole rows, few long rows split across threads), against a double
 *     reference: loss rtol 1e-5 (float32) / 1e-12 (float64), gradient atol 1e-6 / 1e-13;
 *   - the same calls at 1 and 3 threads: the same bits;
 *   - exp and tanh against double (float32; 2e5 points) and long double (float64; 5e4) over their
 *     domains: the largest error in ulp (printed:
 *     the figures of docs/install.md), bounded as tests/test_build.py bounds it (2 and 3 ulp);
 *   - float16 round trips (every float16 value, and 2^20 float32 bit patterns) equal to the
 *     baseline's portable conversion, bit for bit.
 * Exit status 0 when every set passes. Usage: kernel_check [SET...] (default: every supported). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__aarch64__) && defined(__linux__)
#include <sys/prctl.h>
#endif

#include "xc_api.h"
#include "xc_dispatch.h"

static int failures = 0;
/* FNV-1a over the bits of every result of a set: equal hashes, equal results (ci.sh compares the
 * SVE lengths: the fixed accumulator count keeps the summation order whatever the length). */
static uint64_t result_hash = 0xCBF29CE484222325u;
static void hash_bytes(const void *p, size_t n)
{
    for (size_t k = 0; k < n; k++)
        result_hash = (result_hash ^ ((const unsigned char *)p)[k]) * 0x100000001B3u;
}
#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            printf("  FAIL: " __VA_ARGS__);                                                        \
            printf("\n");                                                                          \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

static uint64_t rng_state = 0x9E3779B97F4A7C15u;
static uint64_t next_u64(void)
{ /* splitmix64: a fixed sequence, the same on every run */
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15u);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
    return z ^ (z >> 31);
}
static double uniform(double lo, double hi)
{
    return lo + (hi - lo) * (next_u64() >> 11) * 0x1p-53;
}

/* One xc_xent call (loss per row, lse, gradient) in the dtype `f64`, n_threads threads. */
static void run_xent(int f64, const double *z, const int64_t *target, int64_t n, int64_t c,
                     int threads, double *loss, double *lse, double *grad)
{
    const size_t size = f64 ? sizeof(double) : sizeof(float);
    void *zl = malloc(n * c * size), *gl = malloc(n * c * size), *ll = malloc(n * size),
         *sl = malloc(n * size);
    for (int64_t k = 0; k < n * c; k++) {
        if (f64)
            ((double *)zl)[k] = z[k];
        else
            ((float *)zl)[k] = (float)z[k];
    }
    xc_xent_args a;
    memset(&a, 0, sizeof a);
    a.n_rows = n;
    a.n_classes = c;
    a.logits.data = zl;
    a.logits.row_step = c;
    a.logits.class_step = 1;
    a.target_index = target;
    a.target_step = 1;
    a.ignore_index = -100;
    a.grad.data = gl;
    a.grad.row_step = c;
    a.grad.class_step = 1;
    a.grad_scale = 1.0;
    a.loss_out = ll;
    a.lse_out = sl;
    a.n_threads = threads;
    int status = f64 ? xc_xent_f64(&a) : xc_xent_f32(&a);
    CHECK(status == XC_OK, "xc_xent status %d", status);
    for (int64_t i = 0; i < n; i++) {
        loss[i] = f64 ? ((double *)ll)[i] : ((float *)ll)[i];
        lse[i] = f64 ? ((double *)sl)[i] : ((float *)sl)[i];
    }
    for (int64_t k = 0; k < n * c; k++)
        grad[k] = f64 ? ((double *)gl)[k] : ((float *)gl)[k];
    free(zl), free(gl), free(ll), free(sl);
}

static void check_xent(int f64, int64_t n, int64_t c)
{
    double *z = malloc(n * c * sizeof *z), *g1 = malloc(n * c * sizeof *g1),
           *g3 = malloc(n * c * sizeof *g3);
    double *loss1 = malloc(n * sizeof *loss1), *loss3 = malloc(n * sizeof *loss3),
           *lse1 = malloc(n * sizeof *lse1), *lse3 = malloc(n * sizeof *lse3);
    int64_t *t = malloc(n * sizeof *t);
    for (int64_t k = 0; k < n * c; k++) { /* rounded to float32 first: both dtypes see them */
        z[k] = (float)uniform(-8, 8);
    }
    for (int64_t i = 0; i < n; i++)
        t[i] = (int64_t)(next_u64() % (uint64_t)c);
    run_xent(f64, z, t, n, c, 1, loss1, lse1, g1);
    run_xent(f64, z, t, n, c, 3, loss3, lse3, g3);
    const double rtol = f64 ? 1e-12 : 1e-5, atol = f64 ? 1e-13 : 1e-6;
    double worst_loss = 0, worst_grad = 0;
    for (int64_t i = 0; i < n; i++) {
        /* in double: its rounding (1e-16 a term, sqrt(C) of them) is far below both tolerances,
         * and long double is software arithmetic on aarch64, slow under emulation */
        const double *row = z + i * c;
        double m = row[0], s = 0;
        for (int64_t j = 1; j < c; j++)
            m = row[j] > m ? row[j] : m;
        for (int64_t j = 0; j < c; j++)
            s += exp(row[j] - m);
        const double lse = m + log(s);
        const double want = lse - row[t[i]];
        const double err = fabs(loss1[i] - want) / fabs(want);
        worst_loss = err > worst_loss ? err : worst_loss;
        CHECK(fabs(lse1[i] - lse) <= rtol * fabs(lse) + atol, "lse row %lld", (long long)i);
        for (int64_t j = 0; j < c; j++) {
            const double gw = exp(row[j] - lse) - (j == t[i]);
            const double e = fabs(g1[i * c + j] - gw);
            worst_grad = e > worst_grad ? e : worst_grad;
        }
    }
    CHECK(worst_loss <= rtol, "%s (%lld, %lld) loss rel. error %.3g > %.1g", f64 ? "f64" : "f32",
          (long long)n, (long long)c, worst_loss, rtol);
    CHECK(worst_grad <= atol, "%s (%lld, %lld) grad abs. error %.3g > %.1g", f64 ? "f64" : "f32",
          (long long)n, (long long)c, worst_grad, atol);
    CHECK(memcmp(loss1, loss3, n * sizeof *loss1) == 0 &&
              memcmp(lse1, lse3, n * sizeof *lse1) == 0 && memcmp(g1, g3, n * c * sizeof *g1) == 0,
          "%s (%lld, %lld): 1 and 3 threads differ", f64 ? "f64" : "f32", (long long)n,
          (long long)c);
    hash_bytes(loss1, n * sizeof *loss1), hash_bytes(lse1, n * sizeof *lse1);
    hash_bytes(g1, n * c * sizeof *g1);
    printf("  xent %s (%6lld, %6lld): loss rel. error %.2g, grad abs. error %.2g, threads 1 = 3\n",
           f64 ? "f64" : "f32", (long long)n, (long long)c, worst_loss, worst_grad);
    free(z), free(g1), free(g3), free(loss1), free(loss3), free(lse1), free(lse3), free(t);
}

/* The largest error of fn over n points of [lo, hi] (and log-spread magnitudes for tanh), in ulp
 * of the dtype at the exact value. */
static double max_ulp(int fn, int f64, double lo, double hi, int n)
{
    double *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
    float *xf = malloc(n * sizeof *xf), *yf = malloc(n * sizeof *yf);
    for (int k = 0; k < n; k++) {
        double v = uniform(lo, hi);
        if (fn == XC_MATH_TANH && k % 2) /* |x| in [2^-30, 2^4]: the polynomial near 0 */
            v = ldexp(uniform(1, 2), -30 + (int)(next_u64() % 34)) * (next_u64() % 2 ? 1 : -1);
        x[k] = f64 ? v : (float)v;
        xf[k] = (float)v;
    }
    if (f64)
        xc_math_array_f64(fn, x, y, n);
    else {
        xc_math_array_f32(fn, xf, yf, n);
        for (int k = 0; k < n; k++)
            y[k] = yf[k];
    }
    double worst = 0;
    for (int k = 0; k < n; k++) {
        /* float32: double's exp and tanh (< 1 ulp of double) are exact enough; float64: long
         * double */
        const long double exact = !f64 ? (long double)(fn == XC_MATH_EXP ? exp(x[k]) : tanh(x[k]))
                                  : fn == XC_MATH_EXP ? expl(x[k])
                                                      : tanhl(x[k]);
        const long double a = fabsl(exact);
        int e;
        frexpl(a, &e); /* a in [2^(e-1), 2^e): an ulp is 2^(e-1-p+1) */
        const int p = f64 ? 53 : 24, emin = f64 ? -1021 : -125;
        const long double ulp = ldexpl(1.0L, (e < emin ? emin : e) - p);
        const double err = (double)(fabsl((long double)y[k] - exact) / ulp);
        worst = err > worst ? err : worst;
    }
    free(x), free(y), free(xf), free(yf);
    return worst;
}

static uint32_t bits_of(float f)
{
    uint32_t b;
    memcpy(&b, &f, 4);
    return b;
}

int main(int argc, char **argv)
{
    xc_dispatch_init();
    enum { N_F16 = 65536 + (1 << 20) };
    float *in = malloc(N_F16 * sizeof *in), *want = malloc(N_F16 * sizeof *want),
          *got = malloc(N_F16 * sizeof *got);
    for (uint32_t h = 0; h < 65536; h++) { /* every float16, widened by the portable code */
        const uint32_t sign = (h & 0x8000u) << 16, e = (h >> 10) & 31, m = h & 1023;
        float v = e == 31  ? (m ? NAN : INFINITY)
                  : e == 0 ? ldexpf((float)m, -24)
                           : ldexpf((float)(m | 1024), (int)e - 25);
        uint32_t b = bits_of(v) | sign;
        memcpy(&in[h], &b, 4);
    }
    for (int k = 65536; k < N_F16; k++) {
        uint32_t b = (uint32_t)next_u64();
        memcpy(&in[k], &b, 4);
    }
    if (xc_use_isa("baseline") != 0)
        return 2;
    xc_math_array_f32(XC_MATH_F16_ROUND, in, want, N_F16);

    int ran = 0;
    for (int k = 0; k < xc_isa_count(); k++) {
        const char *name = xc_isa_name(k);
        int wanted = argc == 1;
        for (int a = 1; a < argc; a++)
            wanted |= strcmp(argv[a], name) == 0;
        if (!wanted)
            continue;
        if (!xc_isa_supported(k)) {
            printf("%s: not supported by this CPU\n", name);
            if (argc > 1)
                failures++;
            continue;
        }
        xc_use_isa(name);
        result_hash = 0xCBF29CE484222325u;
        rng_state = 0x9E3779B97F4A7C15u; /* every set sees the same inputs */
        ran++;
        printf("%s\n", name);
#if defined(__aarch64__) && defined(__linux__)
        if (strcmp(name, "sve") == 0) /* PR_SVE_GET_VL (51): the length in bytes, low 16 bits */
            printf("  SVE vector length: %d bits\n", (prctl(51, 0, 0, 0, 0) & 0xFFFF) * 8);
#endif
        const int64_t shapes[][2] = {{64, 100}, {16, 1000}, {2, 70000}};
        for (int f64 = 0; f64 < 2; f64++)
            for (int s = 0; s < 3; s++)
                check_xent(f64, shapes[s][0], shapes[s][1]);
        const double e32 = max_ulp(XC_MATH_EXP, 0, -87.33, 88.376, 200000);
        const double e64 = max_ulp(XC_MATH_EXP, 1, -708.39, 709.436, 50000);
        const double t32 = max_ulp(XC_MATH_TANH, 0, -10, 10, 200000);
        const double t64 = max_ulp(XC_MATH_TANH, 1, -10, 10, 50000);
        printf("  results hash: %016llx\n", (unsigned long long)result_hash);
        printf("  ulp: exp f32 %.3f, exp f64 %.3f, tanh f32 %.3f, tanh f64 %.3f\n", e32, e64, t32,
               t64);
        CHECK(e32 <= 2 && e64 <= 2, "exp error over 2 ulp");
        CHECK(t32 <= 3 && t64 <= 3, "tanh error over 3 ulp");
        xc_math_array_f32(XC_MATH_F16_ROUND, in, got, N_F16);
        int differ = 0;
        for (int j = 0; j < N_F16; j++)
            differ += bits_of(got[j]) != bits_of(want[j]) && !(isnan(got[j]) && isnan(want[j]));
        CHECK(differ == 0, "float16 round trip: %d values differ from the baseline's", differ);
        printf("  float16 round trip: %d values, as the baseline's\n", N_F16);
    }
    printf("%s: %d set(s), %d failure(s)\n", failures ? "FAILED" : "ok", ran, failures);
    return failures != 0;
}
