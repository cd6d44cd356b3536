/* xc_rows.h: dtype-independent helpers for the row loops of the kernels (xc_kernels.h).
 *
 * How rows are cut into work: the kernels process rows in blocks of xc_block_rows(n_classes) rows.
 * A block is the unit that OpenMP hands to a thread and the unit of the loss reduction (each block's
 * rows are summed in row order, then the block sums in block order), so the block size depends on
 * the shape alone, never on the thread count: that is what makes the results bitwise identical
 * for every n_threads. Blocks hold about XC_BLOCK_ELEMS logits: large enough that the scheduling
 * cost is noise, small enough that 2-16 threads get many blocks each for load balance. */
#ifndef XC_ROWS_H
#define XC_ROWS_H

#include <stdlib.h>

#include "xc_api.h"
#include "xc_config.h"

#define XC_BLOCK_ELEMS    32768
#define XC_MAX_BLOCK_ROWS 1024
/* Below this many logits the OpenMP fork/join costs more than it saves: run on the calling thread. */
#define XC_PARALLEL_MIN_ELEMS 32768
#define XC_ALIGN              64

XC_INLINE int64_t xc_block_rows(int64_t n_classes)
{
    int64_t rows = XC_BLOCK_ELEMS / (n_classes > 0 ? n_classes : 1);
    return rows < 1 ? 1 : (rows > XC_MAX_BLOCK_ROWS ? XC_MAX_BLOCK_ROWS : rows);
}

/* Threads worth starting for n_blocks blocks of n_rows x n_classes logits. */
XC_INLINE int xc_team_size(int n_threads, int64_t n_blocks, int64_t n_rows, int64_t n_classes)
{
    if (n_rows * n_classes < XC_PARALLEL_MIN_ELEMS || n_threads < 1)
        return 1;
    return n_blocks < (int64_t)n_threads ? (int)n_blocks : n_threads;
}

/* Element offset of row i of an operand. */
XC_INLINE int64_t xc_row_offset(const xc_matrix *m, int64_t i)
{
    return m->row_offset ? m->row_offset[i] : i * m->row_step;
}

/* Per-thread scratch rows: `n_threads` slices of `per_thread` bytes, each 64-byte aligned, from one
 * allocation made before any output is written (so an allocation failure writes nothing). */
typedef struct {
    void *raw;
    char *base;
    size_t per_thread;
} xc_scratch;

XC_INLINE int xc_scratch_alloc(xc_scratch *s, int n_threads, size_t per_thread)
{
    s->per_thread = (per_thread + XC_ALIGN - 1) / XC_ALIGN * XC_ALIGN;
    s->raw = NULL;
    s->base = NULL;
    if (s->per_thread == 0)
        return XC_OK;
    s->raw = malloc(s->per_thread * (size_t)n_threads + XC_ALIGN);
    if (s->raw == NULL)
        return XC_ENOMEM;
    s->base = (char *)(((uintptr_t)s->raw + XC_ALIGN - 1) / XC_ALIGN * XC_ALIGN);
    return XC_OK;
}

XC_INLINE void *xc_scratch_slice(const xc_scratch *s, int thread, size_t offset)
{
    return s->base ? s->base + s->per_thread * (size_t)thread + offset : NULL;
}

/* Bytes one scratch row of `row_bytes` takes, rounded so that every slice starts 64-aligned. */
XC_INLINE size_t xc_slice_bytes(size_t row_bytes)
{
    return (row_bytes + XC_ALIGN - 1) / XC_ALIGN * XC_ALIGN;
}

/* The next row of thread `thread`'s scratch when `needed` (advancing *offset), else NULL. */
XC_INLINE void *xc_scratch_take(const xc_scratch *s, int thread, size_t *offset, int needed,
                                size_t row_bytes)
{
    if (!needed)
        return NULL;
    void *slice = xc_scratch_slice(s, thread, *offset);
    *offset += xc_slice_bytes(row_bytes);
    return slice;
}

/* Rows up to this size keep their exp terms in scratch between the sum and the gradient pass:
 * the row and its terms then both stay in L2. Longer rows come from DRAM in either pass anyway,
 * and the gradient pass recomputes the exp rather than allocate a scratch row as large as them. */
#define XC_STORED_EXP_MAX_BYTES ((size_t)1 << 20)

/* Gradients at least this large, into memory already touched (a caller's out=), are written
 * with streaming stores (xc_row_ops.inc, stream_row). Below it the gradient may still sit in L2
 * when the caller reads it back, and an ordinary store keeps it there. (4096, 32000) float32 loss+grad, 2 threads, avx512: 0.69 -> 0.47 ns per
 * logit with streaming; (64, 32000), 8 MiB: 0.53 -> 0.44. */
#define XC_STREAM_MIN_BYTES ((size_t)8 << 20)

/* Logits per block of the online pass (xc_row_ops.inc): 2 KiB of float32, so a block is still
 * in L1 when its exp terms are taken right after its max. */
#define XC_ONLINE_BLOCK 512

/* Logits per chunk: the online pass's running max starts afresh at each chunk, so that the
 * chunks of a long row can go to different threads with no change to any bit (xc_split_rows.inc,
 * xent_split). 64 blocks: 128 KiB of float32, enough that the restart costs nothing. A row
 * longer than a chunk is also longer than XC_BLOCK_ELEMS, so it is a row block of its own
 * (xent_split's loss sum relies on it). */
#define XC_CHUNK (64 * XC_ONLINE_BLOCK)
typedef char xc_chunk_holds_a_row_block[XC_CHUNK >= XC_BLOCK_ELEMS ? 1 : -1];

#endif /* XC_ROWS_H */
