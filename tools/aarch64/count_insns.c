/* count_insns.c: one fused loss + gradient call (xc_xent_f32 / _f64, one thread, one contiguous
 * row of N logits, an index target) on the set named by argv[1], for tools/aarch64/insn_counts.py,
 * which counts the instructions qemu executes for two lengths N and reports the difference per
 * logit: the cost of a logit in the row loops, without the fixed costs of the call.
 *   count_insns SET f32|f64 N [grad]   (grad: 1 = loss and gradient, 0 = loss only, -1 = no call:
 *                                       the program's own cost, to subtract) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xc_api.h"
#include "xc_dispatch.h"

int main(int argc, char **argv)
{
    if (argc < 4)
        return 2;
    xc_dispatch_init();
    if (xc_use_isa(argv[1]) != 0) {
        fprintf(stderr, "no %s kernels on this CPU\n", argv[1]);
        return 2;
    }
    const int f64 = strcmp(argv[2], "f64") == 0, grad = argc < 5 ? 1 : atoi(argv[4]);
    const int64_t n = atoll(argv[3]), target = 3;
    const size_t size = f64 ? sizeof(double) : sizeof(float);
    char *z = malloc(n * size), *g = malloc(n * size);
    for (int64_t j = 0; j < n; j++) { /* logits in [-4, 4): no special case anywhere */
        const double v = (double)((j * 7919) % 8000) / 1000.0 - 4.0;
        if (f64)
            ((double *)z)[j] = v;
        else
            ((float *)z)[j] = (float)v;
    }
    double loss[1];
    xc_xent_args a;
    memset(&a, 0, sizeof a);
    a.n_rows = 1;
    a.n_classes = n;
    a.logits.data = z;
    a.logits.row_step = n;
    a.logits.class_step = 1;
    a.target_index = &target;
    a.target_step = 1;
    a.ignore_index = -100;
    if (grad) {
        a.grad.data = g;
        a.grad.row_step = n;
        a.grad.class_step = 1;
        a.grad_scale = 1.0;
    }
    a.loss_out = loss;
    a.n_threads = 1;
    if (grad < 0)
        return 0;
    const int status = f64 ? xc_xent_f64(&a) : xc_xent_f32(&a);
    printf("%s %s n=%lld grad=%d: status %d loss %.6g\n", argv[1], argv[2], (long long)n, grad,
           status, f64 ? loss[0] : (double)((float *)loss)[0]);
    return status;
}
