# The C surface of src_c/ as Cython sees it: declared here once, for xentc/_kernels.pyx (which
# includes this file by its name) and for any later Cython module that calls the kernels.
# Constants that Python also needs (16-bit codes, math codes, status codes) are declared here
# from xc_api.h and re-exported by _kernels.pyx as module attributes, never repeated as numbers.

from libc.stdint cimport int64_t


cdef extern from "xc_dispatch.h" nogil:
    void xc_dispatch_init()
    int xc_isa_count()
    const char *xc_isa_name(int index)
    int xc_isa_supported(int index)
    int xc_use_isa(const char *name)
    const char *xc_active_isa()


cdef extern from "xc_fork.h" nogil:
    void xc_fork_init()
    long xc_fork_pools_released()


cdef extern from "xc_api.h" nogil:
    ctypedef struct xc_matrix:
        void *data
        const int64_t *row_offset
        int64_t row_step, class_step

    ctypedef struct xc_xent_args:
        int64_t n_rows, n_classes
        xc_matrix logits
        const int64_t *target_index
        int64_t target_step
        int64_t ignore_index
        xc_matrix target_prob
        int target_prob_is_f64
        const void *class_weight
        const double *sample_weight
        int64_t sample_weight_step
        double label_smoothing
        double z_loss
        xc_matrix grad
        int grad_fresh
        double grad_scale
        const double *row_grad_scale
        int64_t row_grad_scale_step
        void *loss_out
        void *lse_out
        int lse_out_is_f64
        double *loss_sum_out
        int n_threads
        int transform
        double logit_scale
        double softcap
        int logits_half

    ctypedef struct xc_shard_args:
        xc_xent_args xent
        int64_t class_offset, total_classes
        int want_gap
        double *max_out
        double *sum_out
        double *target_logit_out
        double *pivot_weight_out
        double *weight_sum_out
        double *gap_out
        int64_t *pivot_out
        const double *row_max
        const double *p_scale
        const double *t_scale
        const double *t_floor
        const double *exact_grad
        const double *fill
        const int64_t *exact_class
        const unsigned char *use_fill

    enum:
        XC_OK
        XC_ENOMEM
        XC_HALF_NONE
        XC_HALF_F16
        XC_HALF_BF16
        XC_MATH_EXP
        XC_MATH_LOG
        XC_MATH_LOG1P
        XC_MATH_TANH
        XC_MATH_F16_ROUND
        XC_MATH_BF16_ROUND

    int xc_shard_stats_f32(const xc_shard_args *args)
    int xc_shard_stats_f64(const xc_shard_args *args)
    int xc_shard_grad_f32(const xc_shard_args *args)
    int xc_shard_grad_f64(const xc_shard_args *args)
    int xc_xent_f32(const xc_xent_args *args)
    int xc_xent_f64(const xc_xent_args *args)
    int xc_xent_backward_f32(const xc_xent_args *args, const double *lse_in)
    int xc_xent_backward_f64(const xc_xent_args *args, const double *lse_in)
    int xc_lse_rows_f32(const xc_matrix *x, int64_t n_rows, int64_t n_classes, float *lse_out,
                        int n_threads)
    int xc_lse_rows_f64(const xc_matrix *x, int64_t n_rows, int64_t n_classes, double *lse_out,
                        int n_threads)
    int xc_softmax_rows_f32(const xc_matrix *x, int64_t n_rows, int64_t n_classes,
                            const xc_matrix *out, int log_softmax, int n_threads)
    int xc_softmax_rows_f64(const xc_matrix *x, int64_t n_rows, int64_t n_classes,
                            const xc_matrix *out, int log_softmax, int n_threads)
    int xc_openmp_enabled()
    int xc_openmp_version()
    int xc_openmp_max_threads()
    const void *xc_openmp_entry()
    void xc_math_array_f32(int fn, const float *x, float *out, int64_t n)
    double xc_bandwidth_read(const float *x, int64_t n, int n_threads)
    void xc_bandwidth_copy(const float *src, float *dst, int64_t n, int n_threads)
    void xc_math_array_f64(int fn, const double *x, double *out, int64_t n)
