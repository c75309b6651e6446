"""Selective scan (Mamba's S6 recurrence) in pure PyTorch, with the ``mamba_ssm`` CUDA kernel
used when the package is installed and the tensors live on a GPU.

Shapes follow ``mamba_ssm.ops.selective_scan_interface.selective_scan_fn``: ``u``, ``delta``,
``z``: (batch, d, L); ``A``: (d, n); ``B``, ``C``: (batch, n, L); ``D``, ``delta_bias``: (d,).
The recurrence is ``h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t``, ``y_t = C_t h_t + D u_t``,
and ``y`` is gated by ``silu(z)`` when ``z`` is given.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

try:  # CUDA + Triton only; absent on CPU machines.
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as _cuda_selective_scan
except ImportError:  # pragma: no cover - depends on the machine
    _cuda_selective_scan = None


def cuda_kernel_available() -> bool:
    return _cuda_selective_scan is not None and torch.cuda.is_available()


def _prepare(u, delta, D, z, delta_bias, delta_softplus):
    delta = delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias[..., None].float()
    if delta_softplus:
        delta = F.softplus(delta)
    return u.float(), delta


def _finish(y, u, D, z, dtype):
    if D is not None:
        y = y + u * D[..., None]
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(dtype)


def selective_scan_torch(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Pure-PyTorch scan for CPU (and GPUs without ``mamba_ssm``): one vectorised state update
    per position, over all (batch, channel, state) at once. On CPU this measured 2-15x faster
    (forward + backward) than precomputing all discretised states or chunked parallel scans, whose
    extra memory traffic costs more than the sequential loop for rows of 10-100 tokens."""
    dtype = u.dtype
    u, delta = _prepare(u, delta, D, z, delta_bias, delta_softplus)
    A, B, C = A.float(), B.float(), C.float()
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for t in range(u.shape[-1]):
        h = torch.exp(delta[:, :, t, None] * A) * h + (delta[:, :, t] * u[:, :, t])[..., None] * B[:, None, :, t]
        ys.append(torch.einsum("bdn,bn->bd", h, C[:, :, t]))
    return _finish(torch.stack(ys, dim=-1), u, D, z, dtype)


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Dispatch: the ``mamba_ssm`` kernel on CUDA tensors when available, else :func:`selective_scan_torch`."""
    if u.is_cuda and _cuda_selective_scan is not None:
        return _cuda_selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    return selective_scan_torch(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
