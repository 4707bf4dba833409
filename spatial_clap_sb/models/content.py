"""Content stream: what is sounding, from the mono mid signal (L + R) / 2.

Two implementations share one interface, ``forward(mid, lengths) -> [batch, frames,
output_dim]``: :class:`ContentCNN`, a small CNN on log-mel trained from scratch (the CPU
default), and :class:`~spatial_clap_sb.models.pretrained_audio.PretrainedAudioEncoder`,
a HuggingFace transformers audio model (AST, CLAP's audio tower, wav2vec2-style).
"""
from torch import nn

from spatial_clap_sb.models.blocks import ConvStack
from spatial_clap_sb.models.features import MidLogMel
from spatial_clap_sb.models.pretrained_audio import PretrainedAudioEncoder

__all__ = ["ContentCNN", "PretrainedAudioEncoder", "build_content_encoder"]


def build_content_encoder(cnn, pretrained_model=None, sample_rate=16000,
                          freeze_pretrained=True, frame_mode="time", savedir=None):
    """The content encoder a model file asks for: a transformers audio model when
    ``pretrained_model`` names one, else the log-mel CNN.

    One key of the model file (``content_model``) switches between them, from the
    command line as well (``--content_model=MIT/ast-finetuned-audioset-10-10-0.4593``).

    Arguments
    ---------
    cnn : callable
        Builds the :class:`ContentCNN` (a ``!name:`` partial in the YAML, so it is only
        built when used).
    pretrained_model : str, optional
        Hub id or local folder of a transformers audio model (AST, CLAP's audio tower,
        wav2vec2 family); see :class:`PretrainedAudioEncoder`.
    sample_rate : int
        Rate of the mid signal.
    freeze_pretrained : bool
        Keep the pretrained model frozen (as the paper does): its weights are then
        neither trained, checkpointed nor exported; they are loaded from
        ``pretrained_model``.
    frame_mode : str
        ``"time"`` (frequency patches of a time step averaged: time frames that line
        up with the spatial stream's) or ``"tokens"``; see :class:`PretrainedAudioEncoder`.
    savedir : str, optional
        Download folder of the pretrained model.

    Returns
    -------
    torch.nn.Module

    Example
    -------
    >>> import functools
    >>> cnn = functools.partial(ContentCNN, output_dim=32)
    >>> build_content_encoder(cnn).output_dim
    32
    """
    if not pretrained_model:
        return cnn()
    return PretrainedAudioEncoder(pretrained_model, sample_rate=sample_rate,
                                  freeze=freeze_pretrained, frame_mode=frame_mode,
                                  savedir=savedir)


class ContentCNN(nn.Module):
    """A log-mel CNN over the mid signal that returns content frames.

    Arguments
    ---------
    sample_rate : int
    n_mels : int
    hop_length : float
        Frame hop in ms.
    channels, time_pool, freq_pool : list of int
        Conv blocks (see :class:`~spatial_clap_sb.models.blocks.ConvStack`).
    output_dim : int
        Size of the returned frame vectors.

    Example
    -------
    >>> import torch
    >>> cnn = ContentCNN()
    >>> cnn(torch.randn(2, 32000)).shape
    torch.Size([2, 21, 128])
    """

    def __init__(self, sample_rate=16000, n_mels=64, hop_length=25, channels=(16, 32, 64),
                 time_pool=(1, 2, 2), freq_pool=(4, 4, 4), output_dim=128):
        super().__init__()
        self.features = MidLogMel(sample_rate=sample_rate, n_mels=n_mels,
                                  hop_length=hop_length)
        self.input_norm = nn.BatchNorm2d(1)
        self.convs = ConvStack(1, channels, time_pool, freq_pool)
        self.output = nn.Linear(channels[-1], output_dim)
        self.output_dim = output_dim

    def forward(self, mid, lengths=None):
        """``mid`` ``[batch, time]`` -> content frames ``[batch, frames, output_dim]``."""
        x = self.convs(self.input_norm(self.features(mid)))
        return self.output(x.mean(dim=3).transpose(1, 2))
