"""``@triton.jit`` building blocks shared by the kernels: the online log-sum-exp, the tiled dot, softplus."""
import triton
import triton.language as tl


@triton.jit
def online_logsumexp(m, s, x):
    """Fold a tile ``x [R, C]`` into each row's running log-sum-exp ``m + log(s)``; returns the new ``(m, s)``.

    ``m [R]`` is the running maximum (start at -inf), ``s [R]`` the running sum of ``exp(x - m)`` (start at
    0). Masked entries of ``x`` must be -inf.
    """
    m_new = tl.maximum(m, tl.max(x, axis=1))
    # A tile of only -inf (masked tokens, a masking bias) would give -inf - -inf = NaN: subtract 0 instead.
    m_sub = tl.where(m_new == float("-inf"), 0.0, m_new)
    s = s * tl.exp(m - m_sub) + tl.sum(tl.exp(x - m_sub[:, None]), axis=1)
    return m_new, s


@triton.jit
def tiled_dot(acc, a_rows, a_ok, stride_ak, b_rows, b_ok, stride_bk, depth,
              BLOCK_K: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    """``acc + A @ B.T`` with fp32 accumulation, ``BLOCK_K`` of the shared dimension at a time.

    a_rows:    [M] pointers to the first element of A's rows (rows where ``a_ok`` is False read as 0).
    b_rows:    [N] pointers to the first element of B's rows (rows where ``b_ok`` is False read as 0).
    stride_ak: step between consecutive elements of an A row (likewise ``stride_bk`` for B).
    depth:     length of the shared dimension; the last block is masked.
    UPCAST:    convert both tiles to fp32 first: the interpreter's 16-bit ``tl.dot`` is wrong, and mixed
               input dtypes need one operand type.
    PRECISION: ``input_precision`` of fp32 dots ("ieee", "tf32", "tf32x3"); 16-bit dots use tensor cores.
    """
    for k0 in range(0, depth, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_ok = ks < depth
        ks = ks.to(tl.int64)  # a transposed operand's stride times depth can pass 2^31
        a = tl.load(a_rows[:, None] + ks[None, :] * stride_ak, mask=a_ok[:, None] & k_ok[None, :], other=0.0)
        b = tl.load(b_rows[None, :] + ks[:, None] * stride_bk, mask=k_ok[:, None] & b_ok[None, :], other=0.0)
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        if a.dtype == tl.float32:  # decided at compile time
            acc = tl.dot(a, b, acc, input_precision=PRECISION)
        else:
            acc = tl.dot(a, b, acc)
    return acc


@triton.jit
def softplus(x):
    """``log(1 + e^x)`` as ``max(x, 0) + log(1 + e^-|x|)``: never overflows (libdevice's log1p is missing
    under the interpreter)."""
    return tl.maximum(x, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(x)))
