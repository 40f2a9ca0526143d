# Shared by the compiled kernels: the fused float type and one row-major GEMM over scipy's BLAS.
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
