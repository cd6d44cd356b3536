/* xc_api.h: the C surface that xentc/_kernels.pyx sees. One prototype per operation and dtype.
 *
 * Contract (established by xentc/_validate.py before any call; the kernels do not re-check it):
 *   n_rows >= 0, n_classes >= 1; every pointer addresses native-endian, aligned elements of the
 *   named dtype; steps are in ELEMENTS (negative and zero allowed for inputs); every index target is
 *   in [0, n_classes) or equal to ignore_index; an output never overlaps an input, except that
 *   grad_out may be exactly the logits (same address and steps: the gradient overwrites them).
 * Every kernel returns XC_OK, or XC_ENOMEM before writing anything when its scratch allocation fails. */
#ifndef XC_API_H
#define XC_API_H

#include "xc_config.h"

/* An n_rows x n_classes operand. Row i starts at element row_offset[i] when row_offset is set
 * (leading axes that no single row step describes, e.g. a moved axis of a 3-D view), else at
 * i * row_step; its classes follow every class_step elements. Offsets and steps are in elements. */
typedef struct {
    void *data;                          /* element (0, 0) */
    const int64_t *row_offset;           /* n_rows offsets, or NULL */
    int64_t row_step, class_step;
} xc_matrix;

/* Arguments of the fused cross-entropy kernel. The logits' dtype is the function's (f32 | f64);
 * `void *` members hold that dtype unless noted. NULL means "absent" for every optional member. */
typedef struct {
    int64_t n_rows, n_classes;
    xc_matrix logits;

    /* Targets: exactly one of target_index and target_prob.data is set. */
    const int64_t *target_index;         /* n_rows class indices */
    int64_t target_step;
    int64_t ignore_index;                /* rows whose target equals it do not count */
    xc_matrix target_prob;               /* probabilities, of dtype float64 or float32 ... */
    int target_prob_is_f64;              /* ... as this says, whatever the logits' dtype */

    const void *class_weight;            /* n_classes, contiguous, logits' dtype */
    const double *sample_weight;         /* n_rows; rows with weight 0 do not count */
    int64_t sample_weight_step;
    double label_smoothing;              /* in [0, 1] */
    double z_loss;                       /* >= 0 */

    /* Gradient of sum_i grad_scale * row_grad_scale[i] * loss_i, written when grad.data is set.
     * grad may be the logits themselves (same data, steps and offsets: in place). */
    xc_matrix grad;
    int grad_fresh;                      /* grad was just allocated: its pages are not yet touched */
    double grad_scale;
    const double *row_grad_scale;
    int64_t row_grad_scale_step;

    /* Outputs, each optional. */
    void *loss_out;                      /* n_rows, contiguous: each row's loss */
    void *lse_out;                       /* n_rows, contiguous: each row's log-sum-exp */
    double *loss_sum_out;                /* sum of the row losses, in an order fixed by the shape */

    int n_threads;                       /* >= 1 */
} xc_xent_args;

int xc_xent_f32(const xc_xent_args *args);
int xc_xent_f64(const xc_xent_args *args);

/* Row-wise log-sum-exp (lse_out: n_rows, contiguous), softmax and log-softmax (out: a matrix of
 * the same shape as x) over the classes of x. */
int xc_lse_rows_f32(const xc_matrix *x, int64_t n_rows, int64_t n_classes, float *lse_out,
                    int n_threads);
int xc_lse_rows_f64(const xc_matrix *x, int64_t n_rows, int64_t n_classes, double *lse_out,
                    int n_threads);
int xc_softmax_rows_f32(const xc_matrix *x, int64_t n_rows, int64_t n_classes,
                        const xc_matrix *out, int log_softmax, int n_threads);
int xc_softmax_rows_f64(const xc_matrix *x, int64_t n_rows, int64_t n_classes,
                        const xc_matrix *out, int log_softmax, int n_threads);

/* A function of xc_math.h element-wise over contiguous arrays, at the active instruction set: a
 * test hook for their accuracy. fn: XC_MATH_EXP (the kernels' exp for the dtype), XC_MATH_LOG
 * or XC_MATH_LOG1P (xc_log, xc_log1p: double, the float32 version rounds their result). */
#define XC_MATH_EXP 0
#define XC_MATH_LOG 1
#define XC_MATH_LOG1P 2
void xc_math_array_f32(int fn, const float *x, float *out, int64_t n);
void xc_math_array_f64(int fn, const double *x, double *out, int64_t n);

/* Memory-bandwidth kernels of the benchmark report (xc_bandwidth.c): read n floats once; copy n
 * floats. Each splits the array in one contiguous slice per thread. */
double xc_bandwidth_read(const float *x, int64_t n, int n_threads);
void xc_bandwidth_copy(const float *src, float *dst, int64_t n, int n_threads);

/* Build information for show_config(). */
int xc_openmp_enabled(void);
/* The _OPENMP date the kernels were compiled against (201511 is OpenMP 4.5); 0 without OpenMP. */
int xc_openmp_version(void);
/* omp_get_max_threads() of the runtime the kernels call: OMP_NUM_THREADS as the runtime read it at
 * load, or a later omp_set_num_threads() on this thread (threadpoolctl's threadpool_limits);
 * 1 without OpenMP. */
int xc_openmp_max_threads(void);
/* An address inside that runtime library (xentc/_config.py maps it to the file); NULL without
 * OpenMP. */
const void *xc_openmp_entry(void);

#endif /* XC_API_H */
