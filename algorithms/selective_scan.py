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


def linear_recurrence(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``h_t = a_t * h_{t-1} + b_t`` (``h_{-1} = 0``) over the first dimension, one ``addcmul`` a step."""
    hs = [b[0]]
    for t in range(1, b.shape[0]):
        hs.append(torch.addcmul(b[t], a[t], hs[-1]))
    return torch.stack(hs)


class LinearRecurrence(torch.autograd.Function):
    """``h_t = a_t * h_{t-1} + b_t`` (``h_{-1} = 0``) over the first dimension, with a hand-written
    backward (the reverse recurrence ``g_t = dL/dh_t + a_{t+1} g_{t+1}``). One fused ``addcmul``
    per position each way, outside autograd: no per-token autograd graph (~8 nodes a token for a
    plain loop)."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        h = linear_recurrence(a, b)
        ctx.save_for_backward(a, h)
        return h

    @staticmethod
    def backward(ctx, grad_h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, h = ctx.saved_tensors
        gs = [grad_h[-1]]  # dL/db_t: everything that flows into h_t, last position first
        for t in range(grad_h.shape[0] - 2, -1, -1):
            gs.append(torch.addcmul(grad_h[t], a[t + 1], gs[-1]))
        g = torch.stack(gs[::-1])
        grad_a = torch.cat([torch.zeros_like(a[:1]), g[1:] * h[:-1]])
        return grad_a, g


# Above this many state values (positions x rows x channels x states) a scan without gradients
# streams position by position instead of materialising every state: 4096-row batches ran 2-3x
# faster streamed (the materialised tensors no longer fit in cache), single rows 3-5x faster
# materialised (a few bulk ops instead of ~5 per position).
MATERIALISE_LIMIT = 1 << 18


def selective_scan_torch(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Pure-PyTorch scan for CPU (and GPUs without ``mamba_ssm``). With gradients, or for small
    inputs: the discretised ``exp(delta A)`` and ``delta B u`` of every position in two bulk ops,
    then :class:`LinearRecurrence` over the positions (time-major, so each step reads contiguous
    memory), then the ``C`` read-out in one batched product. Large inputs without gradients: one
    fused state update and read-out per position (see ``MATERIALISE_LIMIT``)."""
    dtype = u.dtype
    u, delta = _prepare(u, delta, D, z, delta_bias, delta_softplus)
    A, B, C = A.float(), B.float(), C.float()
    du = delta * u
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (u, delta, A, B, C))
    if needs_grad or du.numel() * A.shape[1] <= MATERIALISE_LIMIT:
        dA = torch.exp(delta.permute(2, 0, 1)[..., None] * A)  # (L, b, d, n)
        dBu = du.permute(2, 0, 1)[..., None] * B.permute(2, 0, 1)[:, :, None, :]
        h = LinearRecurrence.apply(dA, dBu) if needs_grad else linear_recurrence(dA, dBu)  # no Function overhead
        y = (h @ C.permute(2, 0, 1)[..., None]).squeeze(-1).permute(1, 2, 0)  # (b, d, L)
    else:
        h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
        ys = []
        for t in range(u.shape[-1]):
            h = torch.addcmul(du[:, :, t, None] * B[:, None, :, t], torch.exp(delta[:, :, t, None] * A), h)
            ys.append((h @ C[:, :, t, None]).squeeze(-1))
        y = torch.stack(ys, dim=-1)
    return _finish(y, u, D, z, dtype)


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Dispatch: the ``mamba_ssm`` kernel on CUDA tensors when available, else :func:`selective_scan_torch`."""
    if u.is_cuda and _cuda_selective_scan is not None:
        u, delta, B, C = u.contiguous(), delta.contiguous(), B.contiguous(), C.contiguous()
        return _cuda_selective_scan(u, delta, A, B, C, D, None if z is None else z.contiguous(), delta_bias, delta_softplus)
    return selective_scan_torch(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
