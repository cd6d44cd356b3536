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
    void *data;                /* element (0, 0) */
    const int64_t *row_offset; /* n_rows offsets, or NULL */
    int64_t row_step, class_step;
} xc_matrix;

/* Arguments of the fused cross-entropy kernel. The logits' dtype is the function's (f32 | f64);
 * `void *` members hold that dtype unless noted. NULL means "absent" for every optional member. */
typedef struct {
    int64_t n_rows, n_classes;
    xc_matrix logits;

    /* Targets: exactly one of target_index and target_prob.data is set. */
    const int64_t *target_index; /* n_rows class indices */
    int64_t target_step;
    int64_t ignore_index;   /* rows whose target equals it do not count */
    xc_matrix target_prob;  /* probabilities, of dtype float64 or float32 ... */
    int target_prob_is_f64; /* ... as this says, whatever the logits' dtype */

    const void *class_weight;    /* n_classes, contiguous, logits' dtype */
    const double *sample_weight; /* n_rows; rows with weight 0 do not count */
    int64_t sample_weight_step;
    double label_smoothing; /* in [0, 1] */
    double z_loss;          /* >= 0 */

    /* Gradient of sum_i grad_scale * row_grad_scale[i] * loss_i, written when grad.data is set.
     * grad may be the logits themselves (same data, steps and offsets: in place). */
    xc_matrix grad;
    int grad_fresh; /* grad was just allocated: its pages are not yet touched */
    double grad_scale;
    const double *row_grad_scale;
    int64_t row_grad_scale_step;

    /* Outputs, each optional. */
    void *loss_out;       /* n_rows, contiguous: each row's loss */
    void *lse_out;        /* n_rows, contiguous: each row's log-sum-exp, in the */
    int lse_out_is_f64;   /* logits' dtype, or float64 when this is set */
    double *loss_sum_out; /* sum of the row losses, in an order fixed by the shape */

    int n_threads; /* >= 1 */

    /* Logit transform and 16-bit logits (issue 6), kept together. Read only by the load and
     * store helpers of xc_row_ops.inc and xc_row_loss.inc (load_logits, grad_through_transform,
     * put_grad) and by xent_short_group's gather and scatter; every pass sees the transformed logits
     *   z' = logit_scale z,  then, when softcap > 0,  z'' = softcap tanh(z' / softcap),
     * and the gradient goes back through them: dz''/dz = logit_scale (1 - (z'' / softcap)^2).
     * With 16-bit logits, `logits` and `grad` hold XC_HALF_* elements (steps still count
     * elements), the f32 kernels run on them converted while loading, and loss_out, lse_out and
     * class_weight stay float32. The f64 kernels never get 16-bit logits. */
    int transform;      /* 0: z'' = z, logit_scale and softcap unread */
    double logit_scale; /* finite */
    double softcap;     /* > 0, or 0: no cap */
    int logits_half;    /* XC_HALF_NONE | XC_HALF_F16 | XC_HALF_BF16 */
} xc_xent_args;

#define XC_HALF_NONE 0
#define XC_HALF_F16  1 /* IEEE binary16 (numpy.float16) */
#define XC_HALF_BF16 2 /* bfloat16 (ml_dtypes.bfloat16): the top 16 bits of a float32 */

int xc_xent_f32(const xc_xent_args *args);
int xc_xent_f64(const xc_xent_args *args);

/* Backward mode (xc_backward.inc): the gradient that xc_xent would write for the same args, from
 * lse_in, n_rows log-sum-exps (contiguous) as a forward call wrote them with lse_out_is_f64. It
 * writes the gradient only (args->grad.data must be set; loss_out, lse_out and loss_sum_out are
 * not read), in one pass over the logits with p_j = exp(z_j - lse_in[i]): no max, no sum. The
 * autograd backward of xentc.torch, after a forward that kept the lse. */
int xc_xent_backward_f32(const xc_xent_args *args, const double *lse_in);
int xc_xent_backward_f64(const xc_xent_args *args, const double *lse_in);

/* Vocabulary shards (xc_shard.inc): the classes of each row are split into blocks, and no call
 * ever sees a whole row. One block is n_rows x n_classes logits, classes [class_offset,
 * class_offset + n_classes) of the full total_classes. The members of `xent` that apply are read
 * as in xc_xent_args, for the block: n_rows, n_classes (the block's), logits, target_index
 * (GLOBAL class indices: a row's target lies in this block or not), ignore_index, target_prob
 * (the block's probabilities), class_weight (the block's n_classes weights), label_smoothing,
 * grad (xc_shard_grad's output block, which may be the logits block: in place) and n_threads;
 * the others are unused. xentc/_shards.py merges the blocks' statistics (in class order). */
typedef struct {
    xc_xent_args xent;
    int64_t class_offset, total_classes;

    /* xc_shard_stats outputs, n_rows each, contiguous. m: the row's max over the block. The
     * block's "pivot" class is left out of sum_out and reported on its own: an index target
     * that falls in the block (and is not ignore_index), or, for probability targets, the
     * block's first max class; -1 when none (or when m is not finite).
     *   max_out          m
     *   sum_out          sum_{k != pivot} exp(z_k - m) in double; when m is not finite, the
     *                    unshifted sum of exp(z_k) over every class (0, inf or NaN)
     *   pivot_out        the pivot's GLOBAL class index, or -1
     *   target_logit_out index targets: z_pivot (NaN when there is no pivot)
     *   pivot_weight_out w_pivot (index targets), w_k t'_k at the pivot (probabilities); 0 if none
     *   weight_sum_out   probabilities only: sum_{k != pivot} w_k t'_k, t' = keep t + floor
     *   gap_out          sum_k w_k (shift - z_k) (index targets; only when want_gap), or
     *                    sum_{k != pivot} w_k t'_k (shift - z_k) over t'_k != 0 (probabilities);
     *                    shift = m when finite, else 0 */
    int want_gap;
    double *max_out, *sum_out, *target_logit_out, *pivot_weight_out, *weight_sum_out, *gap_out;
    int64_t *pivot_out;

    /* xc_shard_grad inputs, n_rows each, contiguous: row i's block of the gradient is
     *   g_j = p_scale exp(z_j - row_max) - w_j (t_scale t_j + t_floor)   (t_j = 0: index targets)
     * except g[exact_class - class_offset] = exact_grad where that class is in the block, or
     * every g_j = fill when use_fill. row_max is the row's max over ALL blocks (finite unless
     * use_fill); the merge (xentc/_shards.py) computes the rest. */
    const double *row_max, *p_scale, *t_scale, *t_floor, *exact_grad, *fill;
    const int64_t *exact_class;
    const unsigned char *use_fill;
} xc_shard_args;

int xc_shard_stats_f32(const xc_shard_args *args);
int xc_shard_stats_f64(const xc_shard_args *args);
int xc_shard_grad_f32(const xc_shard_args *args);
int xc_shard_grad_f64(const xc_shard_args *args);

/* Row-wise log-sum-exp (lse_out: n_rows, contiguous), softmax and log-softmax (out: a matrix of
 * the same shape as x) over the classes of x. */
int xc_lse_rows_f32(const xc_matrix *x, int64_t n_rows, int64_t n_classes, float *lse_out,
                    int n_threads);
int xc_lse_rows_f64(const xc_matrix *x, int64_t n_rows, int64_t n_classes, double *lse_out,
                    int n_threads);
int xc_softmax_rows_f32(const xc_matrix *x, int64_t n_rows, int64_t n_classes, const xc_matrix *out,
                        int log_softmax, int n_threads);
int xc_softmax_rows_f64(const xc_matrix *x, int64_t n_rows, int64_t n_classes, const xc_matrix *out,
                        int log_softmax, int n_threads);

/* A function of xc_math.h element-wise over contiguous arrays, at the active instruction set: a
 * test hook for their accuracy. fn: XC_MATH_EXP (the kernels' exp for the dtype), XC_MATH_LOG
 * or XC_MATH_LOG1P (xc_log, xc_log1p: double, the float32 version rounds their result),
 * XC_MATH_TANH (the dtype's tanh), XC_MATH_F16_ROUND or XC_MATH_BF16_ROUND (xc_half.h: x
 * rounded to float16 or bfloat16 and back, as the kernels store and load 16-bit values; the
 * float64 version goes through float32 first). */
#define XC_MATH_EXP        0
#define XC_MATH_LOG        1
#define XC_MATH_LOG1P      2
#define XC_MATH_TANH       3
#define XC_MATH_F16_ROUND  4
#define XC_MATH_BF16_ROUND 5
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
