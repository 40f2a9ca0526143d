# The numeric building blocks every compiled kernel shares: the fused float type, one
# row-major GEMM over scipy's BLAS, sums in fixed-order partial lanes, and the clipping of a
# kernel offset's output columns to the image.
from cython cimport floating
from scipy.linalg.cython_blas cimport dgemm, sgemm


cdef inline void _gemm(bint trans_a, bint trans_b, int m, int n, int k, floating alpha,
                       const floating* a, int lda, const floating* b, int ldb,
                       floating beta, floating* c, int ldc) noexcept nogil:
    # Row-major C(m x n) = alpha * op(A) @ op(B) + beta * C. BLAS is column-major, and a
    # row-major matrix is its transpose in column-major, so computing C^T = op(B)^T op(A)^T
    # means passing B before A with m and n swapped; no data moves.
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float*> b, &ldb, <float*> a, &lda, &beta, c, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double*> b, &ldb, <double*> a, &lda, &beta, c, &ldc)


cdef inline floating _sum_dev(const floating* values, Py_ssize_t count, floating center,
                              bint squared) noexcept nogil:
    # sum(v - center), or sum((v - center)^2) when squared, in 8 interleaved partial sums combined
    # in a fixed order: one running sum would wait on each add's latency (measured: the bias
    # gradient of cs231n-s2 took a quarter of backward). Inlined with constant arguments.
    cdef floating lanes[8]
    cdef floating d
    cdef Py_ssize_t i, body = count - count % 8
    cdef int u
    for u in range(8):
        lanes[u] = 0
    for i in range(0, body, 8):
        for u in range(8):
            d = values[i + u] - center
            lanes[u] += d * d if squared else d
    for i in range(body, count):
        d = values[i] - center
        lanes[0] += d * d if squared else d
    return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]))


cdef inline floating _sum(const floating* values, Py_ssize_t count) noexcept nogil:
    return _sum_dev(values, count, 0, False)


cdef inline floating _sum_sq_dev(const floating* values, Py_ssize_t count, floating center) noexcept nogil:
    return _sum_dev(values, count, center, True)


cdef inline void _valid_range(int offset, int size, int out_size, int stride, int* lo, int* hi) noexcept nogil:
    # The outputs o in [lo, hi) whose input o * stride + offset lies inside [0, size): a kernel
    # offset's in-image columns (the rest read padding).
    lo[0] = 0 if offset >= 0 else min(out_size, (-offset + stride - 1) // stride)
    hi[0] = 0 if size - 1 - offset < 0 else min(out_size, (size - 1 - offset) // stride + 1)
    if hi[0] < lo[0]:
        hi[0] = lo[0]
