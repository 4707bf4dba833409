"""Stereo features: per-channel log-mel and inter-channel cues, from SpeechBrain's STFT.

SpeechBrain's ``Fbank`` sums over channels on multichannel input (and so does
``spectral_magnitude``, which sums the last axis), so the per-channel power is computed
here from SpeechBrain's ``STFT`` and passed to ``Filterbank``, which keeps channels.

Output channels of :class:`StereoFeatures` (all ``[batch, frames, n_mels]``):

0. log-mel of the left channel (dB)
1. log-mel of the right channel (dB)
2. cos of the inter-channel phase difference, per mel band
3. sin of the inter-channel phase difference, per mel band
4. inter-channel level difference (dB), left minus right
5. GCC-PHAT over ``n_mels`` time lags spanning +/- the pair's largest delay (as in the
   DCASE SELD baseline for microphone arrays)

The band phase is the angle of the magnitude-weighted cross-spectrum ``L * conj(R)``
summed over each mel band, so loud bins dominate and the phase is not averaged blindly.

Example
-------
>>> import torch
>>> features = StereoFeatures()
>>> features(torch.randn(2, 16000, 2)).shape
torch.Size([2, 6, 41, 64])
"""
import torch
from torch import nn
from speechbrain.processing.features import STFT, Filterbank, spectral_magnitude

SPEED_OF_SOUND = 343.0
N_CHANNELS = 6


class StereoFeatures(nn.Module):
    """Per-channel log-mel plus IPD (cos/sin), ILD and GCC-PHAT for a stereo pair.

    Arguments
    ---------
    sample_rate : int
        Input sample rate (Hz).
    n_fft : int
        FFT size.
    win_length, hop_length : float
        Window and hop in milliseconds (SpeechBrain's convention).
    n_mels : int
        Mel bands (also the number of GCC-PHAT lags).
    mic_spacing : float
        Microphone spacing (m); sets the GCC-PHAT lag range.
    """

    def __init__(self, sample_rate=16000, n_fft=512, win_length=32, hop_length=25,
                 n_mels=64, mic_spacing=0.17):
        super().__init__()
        self.stft = STFT(sample_rate=sample_rate, win_length=win_length,
                         hop_length=hop_length, n_fft=n_fft)
        fb_args = dict(n_mels=n_mels, n_fft=n_fft, sample_rate=sample_rate,
                       f_max=sample_rate // 2)
        self.log_mel = Filterbank(**fb_args)
        self.band_sum = Filterbank(log_mel=False, **fb_args)
        max_delay = 1.25 * mic_spacing / SPEED_OF_SOUND * sample_rate
        lags = torch.linspace(-max_delay, max_delay, n_mels)
        omega = 2 * torch.pi * torch.arange(n_fft // 2 + 1) / n_fft
        # GCC-PHAT as one product: [re | im] of the whitened cross-spectrum times
        # [cos; -sin] of each lag's phase, averaged over the frequency bins.
        n_freq = omega.shape[0]
        kernel = torch.cat([torch.cos(omega[:, None] * lags[None, :]),
                            -torch.sin(omega[:, None] * lags[None, :])]) / n_freq
        self.register_buffer("gcc_kernel", kernel, persistent=False)

    def forward(self, wavs):
        """Computes the features.

        Arguments
        ---------
        wavs : torch.Tensor
            ``[batch, time, 2]``, channel 0 left.

        Returns
        -------
        torch.Tensor
            ``[batch, 6, frames, n_mels]``.
        """
        if wavs.dim() != 3 or wavs.shape[-1] != 2:
            raise ValueError(
                f"StereoFeatures needs [batch, time, 2] audio, got {tuple(wavs.shape)}."
            )
        spec = self.stft(wavs.float())  # [B, frames, freq, 2 (re/im), 2 (channel)]
        batch, frames, n_freq = spec.shape[:3]
        real = spec[..., 0, :].permute(0, 3, 1, 2)  # [B, 2 (channel), frames, freq]
        imag = spec[..., 1, :].permute(0, 3, 1, 2)
        # Both channels through the filterbank as one [2B, frames, freq] batch. (On 4-D
        # input SpeechBrain's Filterbank treats the last axis as channels; on
        # multichannel STFT output spectral_magnitude would sum over channels.)
        power = (real * real + imag * imag).reshape(batch * 2, frames, n_freq)
        log_mel = self.log_mel(power).view(batch, 2, frames, -1)
        left_re, left_im, right_re, right_im = real[:, 0], imag[:, 0], real[:, 1], imag[:, 1]
        cross = torch.stack([left_re * right_re + left_im * right_im,  # L * conj(R)
                             left_im * right_re - left_re * right_im], dim=1)
        band = self.band_sum(cross.reshape(batch * 2, frames, n_freq)).view(
            batch, 2, frames, -1)
        band_norm = torch.sqrt(band[:, 0] ** 2 + band[:, 1] ** 2 + 1e-12)
        cross_norm = torch.sqrt(cross[:, 0] ** 2 + cross[:, 1] ** 2 + 1e-12)
        whitened = (cross / cross_norm[:, None]).permute(0, 2, 1, 3).reshape(
            batch, frames, 2 * n_freq)
        return torch.stack([log_mel[:, 0], log_mel[:, 1],
                            band[:, 0] / band_norm, band[:, 1] / band_norm,
                            log_mel[:, 0] - log_mel[:, 1],
                            whitened @ self.gcc_kernel], dim=1)


def mid_signal(wavs):
    """The mid signal ``(L + R) / 2`` of ``[..., 2]`` stereo audio: what the content
    stream hears. The same values as ``wavs.mean(dim=-1)``.

    Example
    -------
    >>> wavs = torch.randn(2, 16000, 2)
    >>> torch.equal(mid_signal(wavs), wavs.mean(dim=-1))
    True
    """
    return (wavs[..., 0] + wavs[..., 1]) * 0.5


class MidLogMel(nn.Module):
    """Log-mel of the mid signal (L + R) / 2: what the content stream hears.

    Arguments
    ---------
    sample_rate, n_fft, win_length, hop_length, n_mels
        As in :class:`StereoFeatures`.

    Example
    -------
    >>> MidLogMel()(torch.randn(2, 16000)).shape
    torch.Size([2, 1, 41, 64])
    """

    def __init__(self, sample_rate=16000, n_fft=512, win_length=32, hop_length=25,
                 n_mels=64):
        super().__init__()
        self.stft = STFT(sample_rate=sample_rate, win_length=win_length,
                         hop_length=hop_length, n_fft=n_fft)
        self.log_mel = Filterbank(n_mels=n_mels, n_fft=n_fft, sample_rate=sample_rate,
                                  f_max=sample_rate // 2)

    def forward(self, mid):
        """``mid`` ``[batch, time]`` -> ``[batch, 1, frames, n_mels]``.

        ``spectral_magnitude(..., power=2)`` is the squared power ``(re^2 + im^2)^2``
        (SpeechBrain's ``power=1`` is the power spectrum); trained models expect it.
        """
        return self.log_mel(spectral_magnitude(self.stft(mid.float()), power=2))[:, None]
