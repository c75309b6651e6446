"""A Mamba block with the parameter names of ``mamba_ssm.modules.mamba_simple.Mamba`` (``in_proj``,
``conv1d``, ``x_proj``, ``dt_proj``, ``A_log``, ``D``, ``out_proj``), so that a state dict moves
between this CPU implementation and the CUDA one unchanged."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from rlad.algorithms.selective_scan import selective_scan


def causal_depthwise_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``conv1d`` (depthwise, left-padded, cut to ``L``) as ``d_conv`` shifted multiply-adds: on
    CPU, oneDNN's depthwise convolution cost ~0.1 ms a call even for a single row."""
    k, L = weight.shape[-1], x.shape[-1]
    xp = F.pad(x, (k - 1, 0))
    y = torch.addcmul(bias[:, None], weight[:, 0, 0, None], xp[..., :L])
    for i in range(1, k):
        y = torch.addcmul(y, weight[:, 0, i, None], xp[..., i : i + L])
    return y


class Mamba(nn.Module):
    """Selective state-space block: (batch, L, d_model) -> (batch, L, d_model)."""

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_min: float = 0.001, dt_max: float = 0.1, dt_init_floor: float = 1e-4) -> None:
        super().__init__()
        self.d_inner = expand * d_model
        self.d_state = d_state
        self.dt_rank = math.ceil(d_model / 16)
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner, padding=d_conv - 1)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        # Mamba's initialisation: dt in [dt_min, dt_max] log-uniformly, bias = softplus^-1(dt).
        nn.init.uniform_(self.dt_proj.weight, -self.dt_rank**-0.5, self.dt_rank**-0.5)
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        L = hidden.shape[1]
        x, z = self.in_proj(hidden).transpose(1, 2).chunk(2, dim=1)  # (b, d_inner, L) each
        x = F.silu(causal_depthwise_conv(x, self.conv1d.weight, self.conv1d.bias))
        x_dbl = self.x_proj(x.transpose(1, 2))  # (b, L, dt_rank + 2n)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = (dt @ self.dt_proj.weight.T).transpose(1, 2)  # (b, d_inner, L), bias added in the scan
        y = selective_scan(  # strided views: the CUDA path makes them contiguous, the CPU scan needs no copy
            x, dt, -torch.exp(self.A_log.float()), B.transpose(1, 2), C.transpose(1, 2), self.D.float(),
            z=z, delta_bias=self.dt_proj.bias.float(), delta_softplus=True,
        )
        return self.out_proj(y.transpose(1, 2))
