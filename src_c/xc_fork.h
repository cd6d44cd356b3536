/* xc_fork.h: OpenMP in a child made by fork() (src_c/xc_fork.c says how and why). */
#ifndef XC_FORK_H
#define XC_FORK_H

/* Register the fork handler: once, at import (xentc/_kernels.pyx). Safe to call again. */
void xc_fork_init(void);

/* How many times the handler released the forking thread's OpenMP pool in this process and the
 * parents it was forked from (0 in a build without OpenMP): the tests read it to know the handler
 * ran, not just that the child happened not to hang. */
long xc_fork_pools_released(void);

#endif
