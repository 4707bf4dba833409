"""Building blocks shared by the encoders: conv blocks, masks, frame alignment."""
import torch
import torch.nn.functional as F
from torch import nn


class ConvBlock(nn.Module):
    """3x3 convolution, BatchNorm, ReLU, then average pooling over (time, frequency).

    BatchNorm normalises each channel with statistics over the batch, so the absolute
    level of a feature in one example (an inter-channel phase offset, say) survives;
    per-example norms over time-frequency (GroupNorm, InstanceNorm) would erase it.

    Arguments
    ---------
    in_channels, out_channels : int
    pool : tuple of int
        ``(time, frequency)`` pooling factors.

    Example
    -------
    >>> ConvBlock(6, 16, (2, 4))(torch.randn(2, 6, 10, 64)).shape
    torch.Size([2, 16, 5, 16])
    """

    def __init__(self, in_channels, out_channels, pool):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(out_channels)
        self.pool = nn.AvgPool2d(pool, ceil_mode=True) if pool != (1, 1) else nn.Identity()

    def forward(self, x):
        """``[batch, channels, time, freq]`` -> pooled ``[batch, out, time', freq']``."""
        # oneDNN returns a one-channel input's convolution channels-first (its layout is
        # ambiguous); the norm and the pooling run 1.4-5x faster channels-last.
        x = self.conv(x).contiguous(memory_format=torch.channels_last)
        return self.pool(F.relu(self.norm(x)))


class ConvStack(nn.Sequential):
    """A stack of :class:`ConvBlock`.

    Arguments
    ---------
    in_channels : int
    channels : list of int
        Output channels of each block.
    time_pool, freq_pool : list of int
        Pooling factors of each block.
    """

    def __init__(self, in_channels, channels, time_pool, freq_pool):
        if not len(channels) == len(time_pool) == len(freq_pool):
            raise ValueError("channels, time_pool and freq_pool need one entry per block.")
        blocks, previous = [], in_channels
        for out, t, f in zip(channels, time_pool, freq_pool):
            blocks.append(ConvBlock(previous, out, (t, f)))
            previous = out
        super().__init__(*blocks)

    def forward(self, x):
        """``[batch, channels, time, freq]`` -> ``[batch, channels[-1], time', freq']``.

        The blocks run channels-last (oneDNN's faster layout for these convolutions,
        batch norms and poolings on CPU); the result is returned contiguous.
        """
        return super().forward(x.contiguous(memory_format=torch.channels_last)).contiguous()


def frame_mask(lengths, n_frames):
    """Boolean ``[batch, n_frames]`` mask of valid frames from relative lengths.

    Arguments
    ---------
    lengths : torch.Tensor or None
        ``[batch]`` relative lengths in (0, 1] (SpeechBrain's convention).
    n_frames : int

    Returns
    -------
    torch.Tensor or None

    Example
    -------
    >>> frame_mask(torch.tensor([1.0, 0.5]), 4)
    tensor([[ True,  True,  True,  True],
            [ True,  True, False, False]])
    """
    if lengths is None:
        return None
    valid = torch.clamp(torch.ceil(lengths * n_frames), min=1)
    return torch.arange(n_frames, device=lengths.device)[None, :] < valid[:, None]


def align_frames(frames, n_frames):
    """Linearly resamples ``[batch, frames, dim]`` to ``n_frames`` along time."""
    if frames.shape[1] == n_frames:
        return frames
    return F.interpolate(frames.transpose(1, 2), size=n_frames, mode="linear",
                         align_corners=False).transpose(1, 2)
