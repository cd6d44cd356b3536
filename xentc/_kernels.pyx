# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Thin Cython over src_c/xc_api.h: NumPy arrays -> pointers and element steps, GIL released.

Nothing here checks its input: xentc/_validate.py has already made every array native-endian,
aligned, of the right dtype and shape, and every index valid (see the contract in xc_api.h).
An N x C operand arrives as a `Matrix` (xentc/_validate.py): (array, row_offsets, row_step,
class_step), the array's data pointer being its element (0, ..., 0).
"""

cimport numpy as cnp
from libc.stdint cimport int64_t
from libc.string cimport memset

cnp.import_array()


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

    int XC_OK, XC_ENOMEM
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


cdef void *data_of(object array):
    return NULL if array is None else cnp.PyArray_DATA(<cnp.ndarray>array)


cdef int64_t step_of(object vector):
    # Element step of a 1-D array (0 for None: never read).
    return 0 if vector is None else vector.strides[0] // vector.itemsize


cdef xc_matrix to_matrix(object m):
    cdef xc_matrix out
    out.data = NULL
    out.row_offset = NULL
    out.row_step = 0
    out.class_step = 1
    if m is not None:
        out.data = data_of(m.array)
        out.row_offset = <const int64_t *>data_of(m.row_offsets)
        out.row_step = m.row_step
        out.class_step = m.class_step
    return out


cdef check(int status):
    if status == XC_ENOMEM:
        raise MemoryError("xentc: could not allocate the kernel's per-thread scratch rows")


def xent(logits, Py_ssize_t n_rows, Py_ssize_t n_classes, *, target_index, int64_t ignore_index,
         target_prob, class_weight, sample_weight, double label_smoothing, double z_loss,
         grad, bint grad_fresh, double grad_scale, row_grad_scale, loss_out, lse_out,
         bint want_sum, int n_threads, double logit_scale=1.0, double softcap=0.0,
         int logits_half=0, lse_in=None):
    """Run the fused kernel; returns the sum of the row losses when want_sum, else None.
    softcap 0 means none; logits_half: 0, or 1 (float16) / 2 (bfloat16) logits and grad, run
    by the float32 kernel (XC_HALF_* in xc_api.h). lse_out may be float64 whatever the logits'
    dtype; lse_in (float64, n_rows) selects the backward mode, its own kernel
    (xc_xent_backward_*, src_c/xc_api.h): the gradient only, from these log-sum-exps."""
    cdef xc_xent_args a
    cdef double loss_sum = 0.0
    cdef bint is_f64 = logits.array.dtype.itemsize == 8
    cdef int status
    a.n_rows = n_rows
    a.n_classes = n_classes
    a.logits = to_matrix(logits)
    a.target_index = <const int64_t *>data_of(target_index)
    a.target_step = step_of(target_index)
    a.ignore_index = ignore_index
    a.target_prob = to_matrix(target_prob)
    a.target_prob_is_f64 = target_prob is not None and target_prob.array.dtype.itemsize == 8
    a.class_weight = data_of(class_weight)
    a.sample_weight = <const double *>data_of(sample_weight)
    a.sample_weight_step = step_of(sample_weight)
    a.label_smoothing = label_smoothing
    a.z_loss = z_loss
    a.grad = to_matrix(grad)
    a.grad_fresh = grad_fresh
    a.grad_scale = grad_scale
    a.row_grad_scale = <const double *>data_of(row_grad_scale)
    a.row_grad_scale_step = step_of(row_grad_scale)
    a.loss_out = data_of(loss_out)
    a.lse_out = data_of(lse_out)
    a.lse_out_is_f64 = lse_out is not None and lse_out.dtype.itemsize == 8
    a.loss_sum_out = &loss_sum if want_sum else NULL
    a.n_threads = n_threads
    a.transform = logit_scale != 1.0 or softcap != 0.0
    a.logit_scale = logit_scale
    a.softcap = softcap
    a.logits_half = logits_half
    cdef const double *lse = <const double *>data_of(lse_in)
    with nogil:
        if lse != NULL:
            status = xc_xent_backward_f64(&a, lse) if is_f64 else xc_xent_backward_f32(&a, lse)
        else:
            status = xc_xent_f64(&a) if is_f64 else xc_xent_f32(&a)
    check(status)
    return loss_sum if want_sum else None


cdef xc_shard_args shard_args(logits, Py_ssize_t n_rows, Py_ssize_t n_classes,
                              int64_t class_offset, int64_t total_classes, target_index,
                              int64_t ignore_index, target_prob, class_weight,
                              double label_smoothing, int n_threads):
    # The members both shard kernels read; the rest NULL.
    cdef xc_shard_args sa
    memset(&sa, 0, sizeof(sa))
    sa.xent.n_rows = n_rows
    sa.xent.n_classes = n_classes
    sa.xent.logits = to_matrix(logits)
    sa.xent.target_index = <const int64_t *>data_of(target_index)
    sa.xent.target_step = step_of(target_index)
    sa.xent.ignore_index = ignore_index
    sa.xent.target_prob = to_matrix(target_prob)
    sa.xent.target_prob_is_f64 = target_prob is not None and target_prob.array.dtype.itemsize == 8
    sa.xent.class_weight = data_of(class_weight)
    sa.xent.label_smoothing = label_smoothing
    sa.xent.grad = to_matrix(None)
    sa.xent.n_threads = n_threads
    sa.class_offset = class_offset
    sa.total_classes = total_classes
    return sa


def shard_stats(logits, Py_ssize_t n_rows, Py_ssize_t n_classes, *, int64_t class_offset,
                int64_t total_classes, target_index, int64_t ignore_index, target_prob,
                class_weight, double label_smoothing, bint want_gap, max_out, sum_out,
                target_logit_out, pivot_weight_out, weight_sum_out, gap_out, pivot_out,
                int n_threads):
    """One class block's per-row statistics into the *_out arrays (n_rows, contiguous: float64,
    pivot_out int64). See xc_shard_args in src_c/xc_api.h."""
    cdef xc_shard_args sa = shard_args(logits, n_rows, n_classes, class_offset, total_classes,
                                       target_index, ignore_index, target_prob, class_weight,
                                       label_smoothing, n_threads)
    cdef bint is_f64 = logits.array.dtype.itemsize == 8
    cdef int status
    sa.want_gap = want_gap
    sa.max_out = <double *>data_of(max_out)
    sa.sum_out = <double *>data_of(sum_out)
    sa.target_logit_out = <double *>data_of(target_logit_out)
    sa.pivot_weight_out = <double *>data_of(pivot_weight_out)
    sa.weight_sum_out = <double *>data_of(weight_sum_out)
    sa.gap_out = <double *>data_of(gap_out)
    sa.pivot_out = <int64_t *>data_of(pivot_out)
    with nogil:
        status = xc_shard_stats_f64(&sa) if is_f64 else xc_shard_stats_f32(&sa)
    check(status)


def shard_grad(logits, Py_ssize_t n_rows, Py_ssize_t n_classes, *, int64_t class_offset,
               target_prob, class_weight, grad, row_max, p_scale, t_scale, t_floor, exact_grad,
               fill, exact_class, use_fill, int n_threads):
    """One class block's gradient into `grad` (a Matrix) from the per-row coefficients
    (n_rows, contiguous: float64, exact_class int64, use_fill uint8)."""
    cdef xc_shard_args sa = shard_args(logits, n_rows, n_classes, class_offset, 0, None, 0,
                                       target_prob, class_weight, 0.0, n_threads)
    cdef bint is_f64 = logits.array.dtype.itemsize == 8
    cdef int status
    sa.xent.grad = to_matrix(grad)
    sa.row_max = <const double *>data_of(row_max)
    sa.p_scale = <const double *>data_of(p_scale)
    sa.t_scale = <const double *>data_of(t_scale)
    sa.t_floor = <const double *>data_of(t_floor)
    sa.exact_grad = <const double *>data_of(exact_grad)
    sa.fill = <const double *>data_of(fill)
    sa.exact_class = <const int64_t *>data_of(exact_class)
    sa.use_fill = <const unsigned char *>data_of(use_fill)
    with nogil:
        status = xc_shard_grad_f64(&sa) if is_f64 else xc_shard_grad_f32(&sa)
    check(status)


def lse_rows(x, Py_ssize_t n_rows, Py_ssize_t n_classes, cnp.ndarray lse_out, int n_threads):
    cdef xc_matrix xm = to_matrix(x)
    cdef void *out = cnp.PyArray_DATA(lse_out)
    cdef bint is_f64 = lse_out.dtype.itemsize == 8
    cdef int status
    with nogil:
        if is_f64:
            status = xc_lse_rows_f64(&xm, n_rows, n_classes, <double *>out, n_threads)
        else:
            status = xc_lse_rows_f32(&xm, n_rows, n_classes, <float *>out, n_threads)
    check(status)


def softmax_rows(x, Py_ssize_t n_rows, Py_ssize_t n_classes, out, bint log_softmax,
                 int n_threads):
    cdef xc_matrix xm = to_matrix(x), om = to_matrix(out)
    cdef bint is_f64 = out.array.dtype.itemsize == 8
    cdef int status
    with nogil:
        if is_f64:
            status = xc_softmax_rows_f64(&xm, n_rows, n_classes, &om, log_softmax, n_threads)
        else:
            status = xc_softmax_rows_f32(&xm, n_rows, n_classes, &om, log_softmax, n_threads)
    check(status)


def openmp_enabled():
    """True when the kernels were compiled with OpenMP."""
    return bool(xc_openmp_enabled())


def openmp_version():
    """The _OPENMP date the kernels were compiled against (201511: OpenMP 4.5); 0 if serial."""
    return xc_openmp_version()


def openmp_max_threads():
    """omp_get_max_threads() of the runtime the kernels call, on the calling thread (1 if serial).
    It follows omp_set_num_threads(), which threadpoolctl's threadpool_limits calls."""
    return xc_openmp_max_threads()


def openmp_entry_address():
    """An address inside the OpenMP runtime library the kernels call (0 if serial): see
    xentc/_config.py's openmp_runtime()."""
    return <size_t>xc_openmp_entry()


def fork_pools_released():
    """Forks, in this process and the parents it was forked from, before which xentc's handler
    released the forking thread's OpenMP pool (src_c/xc_fork.c); 0 in a serial build."""
    return xc_fork_pools_released()


def bandwidth_read(cnp.ndarray x, int n_threads):
    """Read every element of a contiguous float32 array once (the report's read bandwidth)."""
    cdef const float *data = <const float *>cnp.PyArray_DATA(x)
    cdef int64_t n = x.size
    cdef double total
    with nogil:
        total = xc_bandwidth_read(data, n, n_threads)
    return total


def bandwidth_copy(cnp.ndarray src, cnp.ndarray dst, int n_threads):
    """Copy a contiguous float32 array into another of the same size (the copy bandwidth)."""
    cdef const float *s = <const float *>cnp.PyArray_DATA(src)
    cdef float *d = <float *>cnp.PyArray_DATA(dst)
    cdef int64_t n = src.size
    with nogil:
        xc_bandwidth_copy(s, d, n, n_threads)


def _math(str name, cnp.ndarray x):
    """The kernels' own "exp", "log", "log1p" or "tanh" (src_c/xc_math.h) element-wise, or the
    16-bit round trips "f16_round" and "bf16_round" (src_c/xc_half.h), at the active instruction
    set (test hook: tests/test_build.py measures their ulp error or checks their bits).
    x: a contiguous 1-D float32 or float64 array."""
    # XC_MATH_EXP, _LOG, _LOG1P, _TANH, _F16_ROUND, _BF16_ROUND
    cdef int fn = {"exp": 0, "log": 1, "log1p": 2, "tanh": 3, "f16_round": 4,
                   "bf16_round": 5}[name]
    out = cnp.PyArray_EMPTY(1, x.shape, cnp.PyArray_TYPE(x), 0)
    if x.dtype.itemsize == 8:
        xc_math_array_f64(fn, <const double *>cnp.PyArray_DATA(x),
                          <double *>cnp.PyArray_DATA(out), x.shape[0])
    else:
        xc_math_array_f32(fn, <const float *>cnp.PyArray_DATA(x), <float *>cnp.PyArray_DATA(out),
                          x.shape[0])
    return out


# ---- instruction sets ------------------------------------------------------------------------------


def isa_compiled():
    """The instruction sets this build carries kernels for, best last."""
    return [xc_isa_name(k).decode() for k in range(xc_isa_count())]


def isa_supported():
    """Those of isa_compiled() that this CPU (and its OS) can run."""
    return [xc_isa_name(k).decode() for k in range(xc_isa_count()) if xc_isa_supported(k)]


def isa_active():
    """The instruction set whose kernels every call runs now."""
    return xc_active_isa().decode()


def _use_isa(str name):
    """Run every later call on `name`'s kernels (tests, and XENTC_ISA at import: see
    xentc/_config.py). Not safe while another thread is inside a kernel."""
    status = xc_use_isa(name.encode())
    if status == -1:
        raise ValueError(f"instruction set must be one of {isa_compiled()}; got {name!r}")
    if status == -2:
        raise ValueError(f"this CPU cannot run the {name} kernels; it runs {isa_supported()}")


xc_dispatch_init()
# Before any kernel can open a parallel region: a fork after it must not leave the child a dead
# thread pool (src_c/xc_fork.c).
xc_fork_init()
