"""Compiled kernels for the rest of a training step: ReLU, affine, batch norm, softmax cross-entropy, optimizer updates.

Elementwise kernels walk fixed chunks of the flat arrays; batch norm gives each thread whole
channels (a channel's statistics are summed by one thread in one order, so the result does
not depend on the thread count); affine splits its GEMMs by rows of the result.
"""
from cython.parallel cimport prange
from libc.math cimport exp, expf, log, logf, sqrt, sqrtf
from libc.string cimport memcpy

from ._cy_numeric cimport _gemm, _sum, _sum_sq_dev, floating

# Elements per chunk of an elementwise kernel: a few L1-sized pieces of work per thread.
DEF CHUNK = 8192


cdef inline Py_ssize_t _chunks(Py_ssize_t n) noexcept nogil:
    return (n + CHUNK - 1) // CHUNK


cdef inline floating _exp(floating v) noexcept nogil:
    if floating is float:
        return expf(v)
    else:
        return exp(v)


cdef inline floating _log(floating v) noexcept nogil:
    if floating is float:
        return logf(v)
    else:
        return log(v)


cdef inline floating _sqrt(floating v) noexcept nogil:
    if floating is float:
        return sqrtf(v)
    else:
        return sqrt(v)


# ------------------------------------------------------------------------------------ ReLU
cdef void _relu_chunk(const floating* x, floating* out, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(lo, hi):
        # `<= 0 -> 0`: NaN stays NaN and -0.0 becomes 0, as in PyTorch.
        out[i] = 0 if x[i] <= 0 else x[i]


cdef void _relu_backward_chunk(const floating* dout, const floating* out, floating* dx,
                               Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating grad
    for i in range(lo, hi):
        grad = dout[i]  # loaded either way: a load under the condition keeps gcc from vectorizing
        dx[i] = grad if out[i] > 0 else 0


def relu_forward(const floating[::1] x, floating[::1] out, int num_threads):
    """out = max(x, 0) on flat arrays."""
    cdef Py_ssize_t n = x.shape[0], k
    if n == 0:
        return
    with nogil:
        for k in prange(_chunks(n), num_threads=num_threads, schedule="static"):
            _relu_chunk(&x[0], &out[0], k * CHUNK, min(n, (k + 1) * CHUNK))


def relu_backward(const floating[::1] dout, const floating[::1] out, floating[::1] dx, int num_threads):
    """dx = dout where out > 0, else 0 (flat arrays)."""
    cdef Py_ssize_t n = dout.shape[0], k
    if n == 0:
        return
    with nogil:
        for k in prange(_chunks(n), num_threads=num_threads, schedule="static"):
            _relu_backward_chunk(&dout[0], &out[0], &dx[0], k * CHUNK, min(n, (k + 1) * CHUNK))


# ---------------------------------------------------------------------------------- affine
cdef inline Py_ssize_t _part(Py_ssize_t total, Py_ssize_t parts, Py_ssize_t t) noexcept nogil:
    return t * total // parts


def affine_forward(const floating[:, ::1] x2, const floating[:, :] w, bint w_transposed,
                   const floating[::1] bias, floating[:, ::1] out, int parts, int num_threads):
    """out = x2 @ w (+ bias, if not empty); w is (D, M) in C order, or in Fortran order
    (w_transposed: its (M, D) transpose is C-contiguous). Rows of out are cut into ``parts``."""
    cdef Py_ssize_t n = x2.shape[0], depth = x2.shape[1], m = out.shape[1], t, r0, r1, r, j
    cdef int ldw = <int> (w.shape[0] if w_transposed else w.shape[1])
    cdef bint has_bias = bias.shape[0] > 0
    if n == 0 or m == 0:
        return
    with nogil:
        for t in prange(parts, num_threads=num_threads, schedule="static"):
            r0 = _part(n, parts, t)
            r1 = _part(n, parts, t + 1)
            if r1 > r0:
                _gemm(False, w_transposed, <int> (r1 - r0), <int> m, <int> depth, 1, &x2[0, 0] + r0 * depth,
                      <int> depth, &w[0, 0], ldw, 0, &out[0, 0] + r0 * m, <int> m)
                if has_bias:
                    for r in range(r0, r1):
                        for j in range(m):
                            out[r, j] = out[r, j] + bias[j]


def affine_backward(const floating[:, ::1] dout, const floating[:, ::1] x2, const floating[:, :] w,
                    bint w_transposed, floating[:, ::1] dx2, floating[:, ::1] dw_c, int parts, int num_threads):
    """dx2 = dout @ w.T (rows cut into ``parts``); dw = x2.T @ dout, its rows (D) cut into
    ``parts``. ``dw_c`` is dw itself (C order) or, with w_transposed, dw.T (so dw has w's order).
    N, D and M are >= 1 (the caller handles empty ones)."""
    cdef Py_ssize_t n = x2.shape[0], depth = x2.shape[1], m = dout.shape[1], t, r0, r1, d0, d1
    cdef int ldw = <int> (w.shape[0] if w_transposed else w.shape[1])
    with nogil:
        for t in prange(parts, num_threads=num_threads, schedule="static"):
            r0 = _part(n, parts, t)
            r1 = _part(n, parts, t + 1)
            if r1 > r0:  # dx2[r0:r1] = dout[r0:r1] @ w.T
                _gemm(False, not w_transposed, <int> (r1 - r0), <int> depth, <int> m, 1, &dout[0, 0] + r0 * m,
                      <int> m, &w[0, 0], ldw, 0, &dx2[0, 0] + r0 * depth, <int> depth)
            d0 = _part(depth, parts, t)
            d1 = _part(depth, parts, t + 1)
            if d1 > d0:
                if w_transposed:  # dw.T[:, d0:d1] = dout.T @ x2[:, d0:d1]
                    _gemm(True, False, <int> m, <int> (d1 - d0), <int> n, 1, &dout[0, 0], <int> m,
                          &x2[0, 0] + d0, <int> depth, 0, &dw_c[0, 0] + d0, <int> depth)
                else:  # dw[d0:d1] = x2[:, d0:d1].T @ dout
                    _gemm(True, False, <int> (d1 - d0), <int> m, <int> n, 1, &x2[0, 0] + d0, <int> depth,
                          &dout[0, 0], <int> m, 0, &dw_c[0, 0] + d0 * m, <int> m)


# ------------------------------------------------------------------------------ batch norm
# x3 is (N, C, L): channel c of sample n is the run x3[n, c, :] (L = 1 for (N, C) inputs).

cdef void _bn_train_channel(const floating* x, floating* out, Py_ssize_t N, Py_ssize_t C, Py_ssize_t L,
                            Py_ssize_t c, floating gamma, floating beta, floating eps, bint relu,
                            floating* mean_out, floating* var_out) noexcept nogil:
    cdef Py_ssize_t n, i
    cdef double total = 0  # across samples in double: N partial sums of L values each
    cdef floating mean, var, scale, shift, v
    cdef const floating* row
    cdef floating* dst
    for n in range(N):
        total += _sum(x + (n * C + c) * L, L)
    mean = <floating> (total / (N * L))
    total = 0
    for n in range(N):
        total += _sum_sq_dev(x + (n * C + c) * L, L, mean)
    var = <floating> (total / (N * L))
    scale = gamma / _sqrt(var + eps)
    shift = beta - mean * scale
    for n in range(N):
        row = x + (n * C + c) * L
        dst = out + (n * C + c) * L
        for i in range(L):
            v = row[i] * scale + shift
            dst[i] = (0 if v <= 0 else v) if relu else v
    mean_out[0] = mean
    var_out[0] = var


def batch_norm_train_forward(const floating[:, :, ::1] x3, const floating[::1] gamma, const floating[::1] beta,
                             double eps, bint relu, floating[:, :, ::1] out, floating[::1] mean,
                             floating[::1] var, int num_threads):
    """out = gamma * (x - mean) / sqrt(var + eps) + beta per channel (then ReLU if asked), with
    the batch mean and biased variance over N and L, written to mean and var."""
    cdef Py_ssize_t N = x3.shape[0], C = x3.shape[1], L = x3.shape[2], c
    if N * L == 0:
        return
    with nogil:
        for c in prange(C, num_threads=num_threads, schedule="static"):
            _bn_train_channel(&x3[0, 0, 0], &out[0, 0, 0], N, C, L, c, gamma[c], beta[c], <floating> eps, relu,
                              &mean[c], &var[c])


def batch_norm_eval_forward(const floating[:, :, ::1] x3, const floating[::1] scale, const floating[::1] shift,
                            bint relu, floating[:, :, ::1] out, int num_threads):
    """out = x * scale + shift per channel (then ReLU if asked)."""
    cdef Py_ssize_t N = x3.shape[0], C = x3.shape[1], L = x3.shape[2], plane, i
    cdef floating a, b, v
    cdef const floating* src
    cdef floating* dst
    if N * C * L == 0:
        return
    with nogil:
        for plane in prange(N * C, num_threads=num_threads, schedule="static"):
            a = scale[plane % C]
            b = shift[plane % C]
            src = &x3[0, 0, 0] + plane * L
            dst = &out[0, 0, 0] + plane * L
            for i in range(L):
                v = src[i] * a + b
                dst[i] = (0 if v <= 0 else v) if relu else v


cdef void _grad_past_relu(const floating* dout, const floating* relu_out, floating* dy,
                          Py_ssize_t count) noexcept nogil:
    # dy = the gradient past a fused ReLU (relu_out NULL: none). Its own loop, dout loaded
    # unconditionally: gcc then turns the select into vector blends (measured: 30x faster than
    # selecting inside the reductions below, which stayed scalar and branchy).
    cdef Py_ssize_t i
    cdef floating grad
    if relu_out == NULL:
        memcpy(dy, dout, count * sizeof(floating))
        return
    for i in range(count):
        grad = dout[i]
        dy[i] = grad if relu_out[i] > 0 else 0


cdef void _bn_backward_channel(const floating* dout, const floating* x, const floating* relu_out,
                               floating* dx, Py_ssize_t N, Py_ssize_t C, Py_ssize_t L, Py_ssize_t c,
                               floating mean, floating inv_std, floating gamma, bint training,
                               floating* dgamma, floating* dbeta) noexcept nogil:
    # dx holds dy (the gradient reaching the batch norm) first, then is overwritten with dx:
    # a channel's rows stay in cache between the passes.
    cdef Py_ssize_t n, i, base
    cdef floating lanes_dy[8]
    cdef floating lanes_dyx[8]
    cdef floating dy, sum_dy_f, sum_dyx_f, x_hat, k, scale
    cdef double sum_dy = 0, sum_dyx = 0
    cdef int u
    cdef Py_ssize_t body = L - L % 8
    cdef const floating* row
    cdef floating* grad
    for n in range(N):
        base = (n * C + c) * L
        row = x + base
        grad = dx + base
        _grad_past_relu(dout + base, relu_out + base if relu_out != NULL else NULL, grad, L)
        for u in range(8):
            lanes_dy[u] = 0
            lanes_dyx[u] = 0
        for i in range(0, body, 8):
            for u in range(8):
                lanes_dy[u] += grad[i + u]
                lanes_dyx[u] += grad[i + u] * (row[i + u] - mean)
        for i in range(body, L):
            lanes_dy[0] += grad[i]
            lanes_dyx[0] += grad[i] * (row[i] - mean)
        sum_dy += ((lanes_dy[0] + lanes_dy[1]) + (lanes_dy[2] + lanes_dy[3])) + \
                  ((lanes_dy[4] + lanes_dy[5]) + (lanes_dy[6] + lanes_dy[7]))
        sum_dyx += ((lanes_dyx[0] + lanes_dyx[1]) + (lanes_dyx[2] + lanes_dyx[3])) + \
                   ((lanes_dyx[4] + lanes_dyx[5]) + (lanes_dyx[6] + lanes_dyx[7]))
    sum_dy_f = <floating> sum_dy
    sum_dyx_f = <floating> (sum_dyx * inv_std)  # = sum(dy * x_hat)
    dbeta[0] = sum_dy_f
    dgamma[0] = sum_dyx_f
    scale = gamma * inv_std
    k = scale / (N * L)
    for n in range(N):
        row = x + (n * C + c) * L
        grad = dx + (n * C + c) * L
        if training:
            # dx = gamma * inv_std / M * (M * dy - sum(dy) - x_hat * sum(dy * x_hat))
            for i in range(L):
                x_hat = (row[i] - mean) * inv_std
                grad[i] = k * ((N * L) * grad[i] - sum_dy_f - x_hat * sum_dyx_f)
        else:  # the statistics are constants
            for i in range(L):
                grad[i] = grad[i] * scale


def batch_norm_backward(const floating[:, :, ::1] dout, const floating[:, :, ::1] x3, const floating[::1] relu_out,
                        const floating[::1] mean, const floating[::1] inv_std, const floating[::1] gamma,
                        bint training, floating[:, :, ::1] dx, floating[::1] dgamma, floating[::1] dbeta,
                        int num_threads):
    """dx, dgamma, dbeta of batch norm (through its ReLU when relu_out, the flat forward output,
    is not empty); training: the statistics were the batch's, else constants."""
    cdef Py_ssize_t N = x3.shape[0], C = x3.shape[1], L = x3.shape[2], c
    cdef const floating* mask = &relu_out[0] if relu_out.shape[0] > 0 else NULL
    if N * L == 0:
        for c in range(C):
            dgamma[c] = 0
            dbeta[c] = 0
        return
    with nogil:
        for c in prange(C, num_threads=num_threads, schedule="static"):
            _bn_backward_channel(&dout[0, 0, 0], &x3[0, 0, 0], mask, &dx[0, 0, 0], N, C, L, c, mean[c],
                                 inv_std[c], gamma[c], training, &dgamma[c], &dbeta[c])


# -------------------------------------------------------------------------------- the loss
def softmax_cross_entropy(const floating[:, ::1] scores, const long long[::1] y, floating[::1] losses,
                          floating[:, ::1] dscores, int num_threads):
    """Per row: losses[r] = logsumexp(scores[r]) - scores[r, y[r]]; dscores = (softmax - onehot) / N."""
    cdef Py_ssize_t n = scores.shape[0], classes = scores.shape[1], r, j
    cdef floating top, total, log_norm, inv_n
    if n == 0:
        return
    inv_n = (<floating> 1) / n
    with nogil:
        for r in prange(n, num_threads=num_threads, schedule="static"):
            top = scores[r, 0]
            for j in range(1, classes):
                if scores[r, j] > top or scores[r, j] != scores[r, j]:
                    top = scores[r, j]
            total = 0
            for j in range(classes):
                dscores[r, j] = _exp(scores[r, j] - top)
                total = total + dscores[r, j]
            log_norm = _log(total)
            losses[r] = log_norm - (scores[r, y[r]] - top)
            for j in range(classes):
                dscores[r, j] = dscores[r, j] / total * inv_n
            dscores[r, y[r]] = dscores[r, y[r]] - inv_n


# --------------------------------------------------------------------- optimizer updates
# Each update is a loop over raw pointers of one chunk (as the ReLU kernels): indexing the
# memoryviews inside prange kept gcc from vectorizing it (measured: Adam 4x slower).

cdef void _sgd_chunk(floating* w, const floating* dw, floating rate, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(lo, hi):
        w[i] = w[i] - rate * dw[i]


cdef void _momentum_chunk(floating* w, const floating* dw, floating* velocity, floating rate, floating mu,
                          Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(lo, hi):
        velocity[i] = velocity[i] * mu - rate * dw[i]
        w[i] = w[i] + velocity[i]


cdef void _rmsprop_chunk(floating* w, const floating* dw, floating* cache, floating rate, floating rho,
                         floating keep, floating epsilon, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(lo, hi):
        cache[i] = cache[i] * rho + keep * dw[i] * dw[i]
        w[i] = w[i] - rate * dw[i] / (_sqrt(cache[i]) + epsilon)


cdef void _adam_chunk(floating* w, const floating* dw, floating* m, floating* v, floating rate, floating b1,
                      floating b2, floating keep1, floating keep2, floating c1, floating c2, floating epsilon,
                      Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(lo, hi):
        m[i] = m[i] * b1 + keep1 * dw[i]
        v[i] = v[i] * b2 + keep2 * dw[i] * dw[i]
        w[i] = w[i] - rate * (m[i] / c1) / (_sqrt(v[i] / c2) + epsilon)


def sgd_update(floating[::1] w, const floating[::1] dw, double lr, int num_threads):
    cdef Py_ssize_t n = w.shape[0], k
    if n == 0:
        return
    with nogil:
        for k in prange(_chunks(n), num_threads=num_threads, schedule="static"):
            _sgd_chunk(&w[0], &dw[0], <floating> lr, k * CHUNK, min(n, (k + 1) * CHUNK))


def sgd_momentum_update(floating[::1] w, const floating[::1] dw, floating[::1] velocity, double lr,
                        double momentum, int num_threads):
    cdef Py_ssize_t n = w.shape[0], k
    if n == 0:
        return
    with nogil:
        for k in prange(_chunks(n), num_threads=num_threads, schedule="static"):
            _momentum_chunk(&w[0], &dw[0], &velocity[0], <floating> lr, <floating> momentum, k * CHUNK,
                            min(n, (k + 1) * CHUNK))


def rmsprop_update(floating[::1] w, const floating[::1] dw, floating[::1] cache, double lr, double decay,
                   double eps, int num_threads):
    cdef Py_ssize_t n = w.shape[0], k
    if n == 0:
        return
    with nogil:
        for k in prange(_chunks(n), num_threads=num_threads, schedule="static"):
            _rmsprop_chunk(&w[0], &dw[0], &cache[0], <floating> lr, <floating> decay, <floating> (1 - decay),
                           <floating> eps, k * CHUNK, min(n, (k + 1) * CHUNK))


def adam_update(floating[::1] w, const floating[::1] dw, floating[::1] m, floating[::1] v, double lr,
                double beta1, double beta2, double eps, double bias1, double bias2, int num_threads):
    cdef Py_ssize_t n = w.shape[0], k
    if n == 0:
        return
    with nogil:
        for k in prange(_chunks(n), num_threads=num_threads, schedule="static"):
            _adam_chunk(&w[0], &dw[0], &m[0], &v[0], <floating> lr, <floating> beta1, <floating> beta2,
                        <floating> (1 - beta1), <floating> (1 - beta2), <floating> bias1, <floating> bias2,
                        <floating> eps, k * CHUNK, min(n, (k + 1) * CHUNK))
