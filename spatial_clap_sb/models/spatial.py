"""Content-aware spatial stream: a SELD-style CRNN over inter-channel cues.

Conv blocks read per-channel log-mel, IPD (cos/sin), ILD and GCC-PHAT
(:class:`~spatial_clap_sb.models.features.StereoFeatures`) and keep a frequency axis
(16 of the 64 bands by default): in a mixture each sound's direction shows in the bands
where it has energy, so pooling frequency away early blurs which direction goes with
which sound (an oracle-supervised probe bound 3-source scenes at 0.47 with 2 bands and
0.63 with 16). The content frame of each instant is concatenated to the flattened
spatial frame (frequency bands x channels) of the same instant, and a bidirectional GRU
follows. With ``content_aware=False`` the stream is blind to content (the ablation).
"""
import torch
from torch import nn

from spatial_clap_sb.models.blocks import ConvStack, align_frames
from spatial_clap_sb.models.features import N_CHANNELS, StereoFeatures


class SpatialCRNN(nn.Module):
    """CRNN over stereo features, conditioned on content frames.

    Arguments
    ---------
    content_dim : int
        Size of the content frames it is conditioned on.
    content_aware : bool
        Condition the spatial frames on the content frames.
    conditioning : str
        ``"concat"``, the one conditioning (named in the files of models exported
        when there were others).
    sample_rate, n_mels, hop_length, mic_spacing
        Feature settings (see ``StereoFeatures``).
    channels, time_pool, freq_pool : list of int
        Conv blocks.
    hidden_dim : int
        GRU size per direction; the output has ``2 * hidden_dim`` features.

    Example
    -------
    >>> crnn = SpatialCRNN(content_dim=128)
    >>> content = torch.randn(2, 32, 128)
    >>> crnn(torch.randn(2, 32000, 2), content).shape
    torch.Size([2, 21, 128])
    """

    def __init__(self, content_dim, content_aware=True, sample_rate=16000, n_mels=64,
                 hop_length=25, mic_spacing=0.17, channels=(16, 32, 64),
                 time_pool=(1, 2, 2), freq_pool=(2, 2, 1), hidden_dim=64,
                 conditioning="concat"):
        super().__init__()
        if conditioning != "concat":
            raise ValueError(f"conditioning must be 'concat', got {conditioning!r}.")
        self.features = StereoFeatures(sample_rate=sample_rate, n_mels=n_mels,
                                       hop_length=hop_length, mic_spacing=mic_spacing)
        self.input_norm = nn.BatchNorm2d(N_CHANNELS)
        self.convs = ConvStack(N_CHANNELS, channels, time_pool, freq_pool)
        n_freq = n_mels
        for f in freq_pool:
            n_freq = -(-n_freq // f)
        self.content_aware = content_aware
        in_dim = channels[-1] * n_freq + (content_dim if content_aware else 0)
        self.frame_proj = nn.Sequential(nn.Linear(in_dim, 2 * hidden_dim), nn.ReLU())
        self.gru = nn.GRU(2 * hidden_dim, hidden_dim, batch_first=True,
                          bidirectional=True)
        self.output_dim = 2 * hidden_dim

    def forward(self, wavs, content_frames=None, lengths=None):
        """Spatial frames of a stereo batch.

        Arguments
        ---------
        wavs : torch.Tensor
            ``[batch, time, 2]``, channel 0 left.
        content_frames : torch.Tensor
            ``[batch, frames, content_dim]`` (any frame count: they are resampled).
        lengths : torch.Tensor, optional
            Relative lengths (unused by the convolutions; kept for the interface).

        Returns
        -------
        torch.Tensor
            ``[batch, frames', 2 * hidden_dim]``.
        """
        maps = self.convs(self.input_norm(self.features(wavs)))  # [B, C, T, F]
        content = None
        if self.content_aware:
            if content_frames is None:
                raise ValueError("A content-aware spatial stream needs content frames.")
            content = align_frames(content_frames, maps.shape[2])
        frames = maps.permute(0, 2, 1, 3).flatten(2)  # [B, T, C * F]
        if content is not None:
            frames = torch.cat([frames, content], dim=-1)
        output, _ = self.gru(self.frame_proj(frames))
        return output

