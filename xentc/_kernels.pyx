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


cdef xc_xent_args plan_args(plan, grad, bint grad_fresh, double grad_scale, row_grad_scale):
    # The one place a validation plan (xentc/_validate.py: XentPlan, or ShardPlan, whose block is
    # its n_classes here) becomes the C struct; the caller adds its outputs. grad: a Matrix or None.
    cdef xc_xent_args a
    memset(&a, 0, sizeof(a))
    a.n_rows = plan.n_rows
    a.n_classes = plan.logits.array.shape[plan.logits.array.ndim - 1]
    a.logits = to_matrix(plan.logits)
    a.target_index = <const int64_t *>data_of(plan.target_index)
    a.target_step = step_of(plan.target_index)
    a.ignore_index = plan.ignore_index
    a.target_prob = to_matrix(plan.target_prob)
    a.target_prob_is_f64 = (plan.target_prob is not None
                            and plan.target_prob.array.dtype.itemsize == 8)
    a.class_weight = data_of(plan.class_weight)
    a.sample_weight = <const double *>data_of(plan.sample_weight)
    a.sample_weight_step = step_of(plan.sample_weight)
    a.label_smoothing = plan.label_smoothing
    a.z_loss = plan.z_loss
    a.grad = to_matrix(grad)
    a.grad_fresh = grad_fresh
    a.grad_scale = grad_scale
    a.row_grad_scale = <const double *>data_of(row_grad_scale)
    a.row_grad_scale_step = step_of(row_grad_scale)
    a.n_threads = plan.n_threads
    a.transform = plan.logit_scale != 1.0 or plan.softcap != 0.0
    a.logit_scale = plan.logit_scale
    a.softcap = plan.softcap
    a.logits_half = plan.half
    return a


cdef bint is_f64(plan):
    return plan.logits.array.dtype.itemsize == 8


def xent(plan, *, grad=None, bint grad_fresh=False, double grad_scale=1.0, row_grad_scale=None,
         loss_out=None, lse_out=None, bint want_sum=False):
    """Run the fused kernel on a plan (plan.n_rows >= 1); returns the sum of the row losses when
    want_sum, else None. grad: a Matrix (the gradient is written) or None (loss only); loss_out:
    the row losses, lse_out the log-sum-exps (float64, or the plan's row dtype), each n_rows and
    contiguous, or None."""
    cdef xc_xent_args a = plan_args(plan, grad, grad_fresh, grad_scale, row_grad_scale)
    cdef double loss_sum = 0.0
    cdef bint f64 = is_f64(plan)
    cdef int status
    a.loss_out = data_of(loss_out)
    a.lse_out = data_of(lse_out)
    a.lse_out_is_f64 = lse_out is not None and lse_out.dtype.itemsize == 8
    a.loss_sum_out = &loss_sum if want_sum else NULL
    with nogil:
        status = xc_xent_f64(&a) if f64 else xc_xent_f32(&a)
    check(status)
    return loss_sum if want_sum else None


def xent_backward(plan, lse_in, *, grad, bint grad_fresh, double grad_scale=1.0,
                  row_grad_scale=None):
    """The backward mode (xc_xent_backward_*, src_c/xc_backward.inc): the gradient xent would
    write into `grad` (a Matrix), from lse_in, the plan's rows' log-sum-exps (float64,
    contiguous) as a forward call returned them."""
    cdef xc_xent_args a = plan_args(plan, grad, grad_fresh, grad_scale, row_grad_scale)
    cdef const double *lse = <const double *>data_of(lse_in)
    cdef bint f64 = is_f64(plan)
    cdef int status
    with nogil:
        status = xc_xent_backward_f64(&a, lse) if f64 else xc_xent_backward_f32(&a, lse)
    check(status)


def shard_stats(plan, *, bint want_gap, max_out, sum_out, target_logit_out, pivot_weight_out,
                weight_sum_out, gap_out, pivot_out):
    """One class block's per-row statistics (a ShardPlan, n_rows >= 1) into the *_out arrays
    (n_rows, contiguous: float64, pivot_out int64). See xc_shard_args in src_c/xc_api.h."""
    cdef xc_shard_args sa
    cdef bint f64 = is_f64(plan)
    cdef int status
    memset(&sa, 0, sizeof(sa))
    sa.xent = plan_args(plan, None, False, 1.0, None)
    sa.class_offset = plan.class_offset
    sa.total_classes = plan.n_classes
    sa.want_gap = want_gap
    sa.max_out = <double *>data_of(max_out)
    sa.sum_out = <double *>data_of(sum_out)
    sa.target_logit_out = <double *>data_of(target_logit_out)
    sa.pivot_weight_out = <double *>data_of(pivot_weight_out)
    sa.weight_sum_out = <double *>data_of(weight_sum_out)
    sa.gap_out = <double *>data_of(gap_out)
    sa.pivot_out = <int64_t *>data_of(pivot_out)
    with nogil:
        status = xc_shard_stats_f64(&sa) if f64 else xc_shard_stats_f32(&sa)
    check(status)


def shard_grad(plan, *, grad, row_max, p_scale, t_scale, t_floor, exact_grad, fill, exact_class,
               use_fill):
    """One class block's gradient into `grad` (a Matrix) from the per-row coefficients
    (n_rows, contiguous: float64, exact_class int64, use_fill uint8)."""
    cdef xc_shard_args sa
    cdef bint f64 = is_f64(plan)
    cdef int status
    memset(&sa, 0, sizeof(sa))
    sa.xent = plan_args(plan, grad, False, 1.0, None)
    sa.class_offset = plan.class_offset
    sa.row_max = <const double *>data_of(row_max)
    sa.p_scale = <const double *>data_of(p_scale)
    sa.t_scale = <const double *>data_of(t_scale)
    sa.t_floor = <const double *>data_of(t_floor)
    sa.exact_grad = <const double *>data_of(exact_grad)
    sa.fill = <const double *>data_of(fill)
    sa.exact_class = <const int64_t *>data_of(exact_class)
    sa.use_fill = <const unsigned char *>data_of(use_fill)
    with nogil:
        status = xc_shard_grad_f64(&sa) if f64 else xc_shard_grad_f32(&sa)
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
    cdef int fn = MATH_CODES[name]
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


# Constants Python shares with C (xc_api.h, declared in _kernels.pxd).
HALF_NONE, HALF_F16, HALF_BF16 = XC_HALF_NONE, XC_HALF_F16, XC_HALF_BF16
MATH_CODES = {"exp": XC_MATH_EXP, "log": XC_MATH_LOG, "log1p": XC_MATH_LOG1P,
              "tanh": XC_MATH_TANH, "f16_round": XC_MATH_F16_ROUND,
              "bf16_round": XC_MATH_BF16_ROUND}

xc_dispatch_init()
# Before any kernel can open a parallel region: a fork after it must not leave the child a dead
# thread pool (src_c/xc_fork.c).
xc_fork_init()
