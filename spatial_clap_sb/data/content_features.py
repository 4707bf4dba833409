"""Content features of a frozen pretrained encoder, computed once per scene file.

A frozen content encoder (a transformers audio model on the mid signal, as the paper
freezes BEATs / HTS-AT) gives the same frames for a scene every epoch, and it costs
far more than the rest of the audio tower. :class:`ContentFeatureCache` computes them
once per stored scene file (:meth:`~ContentFeatureCache.fill`, run by the recipe after
preparation) and keeps them under ``<data_folder>/content_features/<encoder key>/``;
the scene pipeline then reads them (``content_frames``) and the audio tower skips its
content encoder. Frames are stored in float16 (half the disk; an AST-base's time
frames of a 10-s scene take about 150 KB), and the rounded frames are what training
reads in every epoch, the first included. The key names the encoder (source, layer, frame layout, rates), so
another encoder never reads these features. Scenes mixed on the fly are new every
epoch: they have nothing to cache.
"""
import hashlib
import json
import logging
import os

import numpy as np
import torch
from tqdm import tqdm

from spatial_clap_sb.data.audio_io import load_stereo
from spatial_clap_sb.files import atomic_write_npz
from spatial_clap_sb.models.features import mid_signal

logger = logging.getLogger(__name__)

__all__ = ["ContentFeatureCache", "is_frozen_pretrained"]


def is_frozen_pretrained(encoder):
    """Whether a content encoder is a frozen pretrained model (its features can be
    cached).

    Example
    -------
    >>> from spatial_clap_sb.models.content import ContentCNN
    >>> is_frozen_pretrained(ContentCNN())
    False
    """
    return bool(getattr(encoder, "freeze", False)) and hasattr(encoder, "source")


class ContentFeatureCache:
    """Content frames of stored scene files, computed once by a frozen encoder.

    Arguments
    ---------
    encoder : PretrainedAudioEncoder
        A frozen content encoder (``forward(mid [B, T], lengths) -> [B, frames, D]``).
    folder : str
        Root of the cache (e.g. ``<data_folder>/content_features``).
    sample_rate : int
        The rate the scene files are read at (the model's).
    device : str or torch.device
        Where the encoder runs.

    Attributes
    ----------
    computed, read : int
        Scenes whose frames were computed and read from disk by this object.
    """

    def __init__(self, encoder, folder, sample_rate, device="cpu"):
        if not is_frozen_pretrained(encoder):
            raise ValueError("Only a frozen pretrained content encoder gives the same "
                             "features every epoch; this one trains or is not pretrained.")
        self.encoder = encoder
        self.sample_rate = int(sample_rate)
        self.device = torch.device(device)
        self.folder = os.path.join(os.fspath(folder), self.encoder_key(encoder))
        self.computed = 0
        self.read = 0

    @staticmethod
    def encoder_key(encoder):
        """A short hash of what makes the encoder's frames what they are."""
        described = {key: str(getattr(encoder, key, None)) for key in (
            "source", "output_layer", "frame_mode", "crop_to_input", "sample_rate",
            "target_rate")}
        return hashlib.sha1(json.dumps(described, sort_keys=True).encode()).hexdigest()[:12]

    def path(self, wav):
        """The cache file of one scene file."""
        name = hashlib.sha1(os.path.abspath(wav).encode("utf-8")).hexdigest()[:24]
        return os.path.join(self.folder, f"{name}.npz")

    def frames(self, wav):
        """``[frames, D]`` float32 content frames of a scene file (computed on a miss)."""
        path = self.path(wav)
        if os.path.exists(path):
            with np.load(path) as stored:
                frames = torch.from_numpy(stored["frames"]).float()
            self.read += 1
            return frames
        return self._compute([wav])[0]

    def fill(self, wavs, batch_size=16):
        """Computes the frames of every file not cached yet (files of equal length share
        a batch). Returns how many were computed."""
        missing = sorted({wav for wav in wavs if not os.path.exists(self.path(wav))})
        before = self.computed
        for start in tqdm(range(0, len(missing), batch_size), desc="content features",
                          disable=not missing, mininterval=5.0):
            self._compute(missing[start:start + batch_size])
        logger.info("Content features of %s: %d scene files computed, %d were cached.",
                    getattr(self.encoder, "source", "the encoder"),
                    self.computed - before, len(set(wavs)) - len(missing))
        return self.computed - before

    def _compute(self, wavs):
        signals = [torch.from_numpy(load_stereo(wav, self.sample_rate)) for wav in wavs]
        groups = {}
        for index, signal in enumerate(signals):
            groups.setdefault(len(signal), []).append(index)
        out = [None] * len(wavs)
        encoder = self.encoder.to(self.device)
        for indices in groups.values():
            mid = mid_signal(torch.stack([signals[i] for i in indices])).to(self.device)
            with torch.inference_mode():
                frames = encoder(mid).float().cpu()
            for i, item in zip(indices, frames.half()):
                atomic_write_npz(self.path(wavs[i]), frames=item.numpy())
                out[i] = item.float()
        self.computed += len(wavs)
        return out
