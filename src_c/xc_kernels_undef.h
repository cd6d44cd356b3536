/* xc_kernels_undef.h: ends one dtype's instantiation in xc_kernels_isa.h. The including file's
 * macros and those xc_kernels.inc defines go, so that the next dtype's inclusion starts clean.
 * No include guard: included once per dtype. */
#undef XC_LANES
#undef XC_PREFETCH_BYTES
#undef XC_LOCAL
#undef XC_NAME
#undef XC_CAT
#undef XC_CAT_
#undef XC_REAL
#undef XC_SUFFIX
#undef XC_EXP
#undef XC_EXP_NONPOS
#undef XC_TANH
