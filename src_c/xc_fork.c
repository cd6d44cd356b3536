/* xc_fork.c: a child process made by fork() keeps working, threads included.
 * Compiled at baseline flags with the extension (setup.py), with OpenMP when the build has it.
 *
 * The problem: libgomp (GCC's OpenMP runtime, the one xentc's wheels bundle) keeps a pool of
 * worker threads per thread that has opened a parallel region, and reuses it for that thread's
 * later regions. fork() copies only the calling thread into the child, together with its pointer
 * to that pool; the child's next parallel region hands work to pool threads that do not exist
 * there and waits for them forever. Every pipeline that forks workers after a threaded call in
 * the parent meets it: multiprocessing's fork Process and Pool, PyTorch's DataLoader workers,
 * ProcessPoolExecutor, gunicorn and celery.
 *
 * What others do: OpenBLAS registers a pthread_atfork "prepare" handler that stops its threads
 * before the fork, so the child starts with none and makes its own; PyTorch's DataLoader sets one
 * thread in its workers; scikit-learn documents the hang and recommends spawn / forkserver, or
 * LLVM's libomp, whose own fork handler rebuilds the runtime in the child.
 *
 * What xentc does, as OpenBLAS does: a prepare handler releases the forking thread's pool with
 * OpenMP 5.0's omp_pause_resource_all(omp_pause_soft) (libgomp: the pool threads leave and the
 * thread forgets the pool). The child then builds a fresh pool at its first threaded call and keeps
 * every thread it asks for, and so does the parent at its next one: one pool start in each. On a
 * quiet 2-core AMD EPYC (python tools/fork_timing.py, --rows 64 --classes 1000) the parent's next
 * call took 0.6-0.7 ms instead of 0.1-0.25, the child's first 1-16 ms (its pool start and its first
 * writes to memory shared copy-on-write with the parent), and every later call as before. Only the
 * forking thread needs it: the child has no other thread, and pools of the parent's other threads
 * stay as they are. A fork from inside a parallel region (impossible through xentc, whose kernels
 * call no user code) is refused by the runtime and left as it is. */
#include "xc_fork.h"

#include "xc_config.h"

#if defined(_OPENMP) && !defined(_WIN32)
#include <pthread.h>

/* Written by the prepare handler, which runs on the forking thread while the other threads of
 * the process may be calling xentc: atomic, though only the tests read it. */
static long released_count;

static void release_pool_before_fork(void)
{
    if (omp_pause_resource_all(omp_pause_soft) == 0) {
        __atomic_fetch_add(&released_count, 1, __ATOMIC_RELAXED);
    }
}

static pthread_once_t registered = PTHREAD_ONCE_INIT;

static void register_handler(void) { pthread_atfork(release_pool_before_fork, NULL, NULL); }

void xc_fork_init(void) { pthread_once(&registered, register_handler); }

long xc_fork_pools_released(void) { return __atomic_load_n(&released_count, __ATOMIC_RELAXED); }

#else
/* No OpenMP (or no fork): nothing survives a fork that could hang. */
void xc_fork_init(void) {}

long xc_fork_pools_released(void) { return 0; }
#endif
