"""Fusion of the content and spatial frame streams, pooling over time, projection.

Example
-------
>>> import torch
>>> fusion = ConcatFusion(content_dim=8, spatial_dim=4, output_dim=16)
>>> fused = fusion(torch.randn(2, 5, 8), torch.randn(2, 5, 4))
>>> pooled = AttentionPooling(16, n_queries=2)(fused)
>>> ProjectionHead(32, 6)(pooled).shape
torch.Size([2, 6])
"""
import torch
import torch.nn.functional as F
from torch import nn

from spatial_clap_sb.models.blocks import align_frames


def output_dim(module, enabled=True):
    """The ``output_dim`` of a module (0 when ``enabled`` is False), so that a YAML
    derives sizes from the modules instead of repeating them.

    Example
    -------
    >>> output_dim(ConcatFusion(4, 4, 16)), output_dim(ConcatFusion(4, 4, 16), False)
    (16, 0)
    """
    return int(module.output_dim) if enabled else 0


class ConcatFusion(nn.Module):
    """Concatenates content and spatial frames and mixes them with an MLP.

    Arguments
    ---------
    content_dim, spatial_dim : int
        Frame sizes; ``spatial_dim=0`` fuses content alone (the mono ablation).
    output_dim : int
    """

    def __init__(self, content_dim, spatial_dim, output_dim=256):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(content_dim + spatial_dim, output_dim),
                                 nn.ReLU(), nn.Linear(output_dim, output_dim))
        self.output_dim = output_dim

    def forward(self, content, spatial=None):
        """``[B, Tc, Dc]`` and ``[B, Ts, Ds]`` -> ``[B, Ts, output_dim]``."""
        if spatial is None:
            return self.mlp(content)
        return self.mlp(torch.cat([align_frames(content, spatial.shape[1]), spatial], -1))


class AttentionPooling(nn.Module):
    """Pools frames over time with ``n_queries`` learned attention distributions.

    Several queries let a two-source scene keep each source in its own slot instead of
    averaging them into one vector. Output size: ``n_queries * dim``.

    Arguments
    ---------
    dim : int
    n_queries : int
    """

    def __init__(self, dim, n_queries=4):
        super().__init__()
        self.scores = nn.Linear(dim, n_queries)
        self.output_dim = dim * n_queries

    def forward(self, frames, mask=None):
        """``[B, T, dim]`` (and a ``[B, T]`` valid-frame mask) -> ``[B, n_queries*dim]``."""
        scores = self.scores(frames)  # [B, T, Q]
        if mask is not None:
            scores = scores.masked_fill(~mask[:, :, None], float("-inf"))
        weights = torch.softmax(scores, dim=1)
        return torch.einsum("btq,btd->bqd", weights, frames).flatten(1)


class ProjectionHead(nn.Module):
    """MLP projection into the joint space, L2-normalised (as in CLAP).

    Arguments
    ---------
    input_dim : int
    output_dim : int
        Joint embedding size (512 in the paper).
    """

    def __init__(self, input_dim, output_dim=512):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(input_dim, output_dim), nn.GELU(),
                                 nn.Linear(output_dim, output_dim))
        self.output_dim = output_dim

    def forward(self, x):
        """``[B, input_dim]`` -> unit-norm ``[B, output_dim]``."""
        return F.normalize(self.mlp(x), dim=-1)
