# Shared by the compiled kernels: the fused float type, one row-major GEMM over scipy's BLAS
# and a row sum.
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


cdef inline floating _sum(const floating* values, Py_ssize_t count) noexcept nogil:
    # In 8 interleaved partial sums, combined in a fixed order: one running sum would wait on
    # each add's latency (measured: the bias gradient of cs231n-s2 took a quarter of backward).
    cdef floating lanes[8]
    cdef Py_ssize_t i, body = count - count % 8
    cdef int u
    for u in range(8):
        lanes[u] = 0
    for i in range(0, body, 8):
        for u in range(8):
            lanes[u] += values[i + u]
    for i in range(body, count):
        lanes[0] += values[i]
    return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]))
