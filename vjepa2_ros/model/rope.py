"""3D rotary position embedding exactly as the official V-JEPA 2 code computes it (spec a.2).

The head dim is split into s = 2*floor(floor(hd/3)/2) dims per axis, in the order time, row,
column; the last hd - 3s dims are not rotated. Within a chunk of d dims the angle vector is the
*tiled* copy [p*f_0 .. p*f_{d/2-1}, p*f_0 .. p*f_{d/2-1}] while the rotation pairs *adjacent*
elements (2k, 2k+1): the two members of a pair use different angles. Upstream keeps this for
checkpoint compatibility, so we reproduce it bit for bit.

Angles are computed in the activation dtype, as upstream does, and once per forward pass (the
tables are the same for every block).
"""

from __future__ import annotations

import torch

ROPE_BASE = 10000.0


def rope_split(head_dim: int) -> int:
    """Dims per rotated axis: 20 for hd 64, 26 for hd 80, 4 for hd 16."""
    return 2 * ((head_dim // 3) // 2)


def axis_angles(pos: torch.Tensor, dim: int, dtype: torch.dtype) -> torch.Tensor:
    """Tiled angles of one axis chunk. pos [N] -> [N, dim]."""
    omega = torch.arange(dim // 2, dtype=dtype, device=pos.device)
    omega = 1.0 / ROPE_BASE ** (omega / (dim / 2.0))            # [dim/2]
    freq = pos.to(dtype)[:, None] * omega[None, :]               # [N, dim/2]
    return torch.cat([freq, freq], dim=-1)                       # [N, dim], tiled


def rope_angles(head_dim: int, dtype: torch.dtype, t: torch.Tensor,
                h: torch.Tensor | None = None, w: torch.Tensor | None = None) -> torch.Tensor:
    """Angles for every head dim of N tokens. t, h, w: [N] positions -> [N, head_dim].

    Axes left as None get zero angles, i.e. those dims pass through unrotated (the AC predictor's
    action and state tokens carry only a time position).
    """
    s = rope_split(head_dim)
    n = t.shape[0]
    zeros = torch.zeros(n, s, dtype=dtype, device=t.device)
    parts = [axis_angles(t, s, dtype),
             zeros if h is None else axis_angles(h, s, dtype),
             zeros if w is None else axis_angles(w, s, dtype),
             torch.zeros(n, head_dim - 3 * s, dtype=dtype, device=t.device)]
    return torch.cat(parts, dim=-1)


def rope_tables(angles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin) of an angle table, each [N, head_dim]."""
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs. x [..., N, hd]; cos, sin [N, hd] (broadcast over leading dims)."""
    x_even, x_odd = x[..., 0::2], x[..., 1::2]
    rotated = torch.stack((-x_odd, x_even), dim=-1).flatten(-2)  # [..., N, hd]: (-x1, x0, -x3, x2, ...)
    return x * cos + rotated * sin


def grid_positions(t: int, h: int, w: int, device: torch.device | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Positions of tokens ordered time-major, then row, then column: each [t*h*w]."""
    idx = torch.arange(t * h * w, device=device)
    return idx // (h * w), (idx % (h * w)) // w, idx % w
