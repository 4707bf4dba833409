"""Pretrained HuggingFace audio models as the content stream of the audio tower.

The content encoder of Spatial-CLAP looks at the mono *mid* signal ``(L + R) / 2`` and says
*what* is sounding. By default it is a small CNN trained from scratch; in the paper it is a
pretrained mono audio encoder, kept frozen. :class:`PretrainedAudioEncoder` wraps a
`transformers <https://huggingface.co/docs/transformers>`_ audio model behind the same
interface as the CNN content encoder::

    encoder = PretrainedAudioEncoder("path/to/saved_model", sample_rate=16000)
    frames = encoder(mid, lengths)          # mid: [B, T] -> frames: [B, N, encoder.output_dim]

Supported families (dispatched on the *config type* / ``model_type``, never on the name):

* **AST** (``ASTConfig`` -> ``ASTModel`` + ``ASTFeatureExtractor``; 16 kHz log-mel fbanks).
  AST's tokens are *patches* of the (frequency x time) spectrogram, not time frames; the
  two leading tokens (CLS and distillation) are dropped.
* **CLAP audio tower** (``ClapConfig`` -> the ``audio_model`` of ``ClapModel``;
  ``ClapAudioConfig`` -> ``ClapAudioModel``; ``ClapFeatureExtractor``, 48 kHz,
  ``input_features``). This is the HTS-AT Swin transformer; its last hidden state is a
  (channels x frequency x time) map that is turned back into a token sequence here.
* **Raw-waveform models** of the wav2vec2 / HuBERT / WavLM / data2vec-audio family
  (``AutoModel`` whose main input is ``input_values``), whose frames are genuine time
  frames (20 ms for the usual conv stack).

Frame layout
------------
For the spectrogram-patch models (AST, CLAP) the returned sequence is controlled by
``frame_mode``:

* ``"tokens"`` (default): every patch token, ordered **time-major** (all frequency patches
  of the first time step, then those of the second, ...). ``N = n_time * n_freq``. The
  index along the sequence grows with time, so interpolating the sequence length (what the
  downstream fusion does) keeps a rough time alignment, but the tokens are patches, not
  strictly time frames.
* ``"time"``: the frequency patches of each time step are averaged, giving ``N = n_time``
  genuine time frames (better suited to frame-wise concatenation with the spatial stream).

With ``crop_to_input=True`` (default) the time steps that lie wholly in the padding the
feature extractor adds (AST pads every clip to ``max_length`` fbank frames, about 10 s; CLAP
to ``max_length_s``, 10 s) are cut off, so the frames span the batch's audio (up to its
longest item) and line up in time with the spatial stream. Raw-waveform models are padded
only to the longest item and need no crop; their feature extractor's attention mask is
passed to the model when the extractor asks for one (``return_attention_mask``, as for the
"layer"-norm wav2vec2 / WavLM checkpoints), otherwise the zero padding is seen by the model,
as in transformers' own batching.

Because the frames span the longest item, SpeechBrain's relative ``lengths`` (relative to
the longest item of the batch) stay valid, up to the frame hop, as relative frame counts.

Inputs longer than the extractor's maximum are truncated by the extractor (AST keeps the
first ``max_length`` frames; CLAP takes random crops or its "fusion" crops; in eval mode the
random crops are drawn with a fixed seed, so the output is deterministic).
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import Iterator, List, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn

logger = logging.getLogger(__name__)

__all__ = ["PretrainedAudioEncoder", "PretrainedAudioLoadError"]

#: ``model_type`` values of raw-waveform encoders that take ``input_values`` (the dispatch
#: also accepts any other model whose ``main_input_name`` is ``input_values``).
RAW_WAVEFORM_MODEL_TYPES = frozenset(
    {
        "wav2vec2",
        "wav2vec2-conformer",
        "hubert",
        "wavlm",
        "data2vec-audio",
        "unispeech",
        "unispeech-sat",
        "sew",
        "sew-d",
    }
)

_AST_MODEL_TYPES = frozenset({"audio-spectrogram-transformer"})
_CLAP_MODEL_TYPES = frozenset({"clap", "clap_audio_model"})

_OFFLINE_HINT = (
    "No model hub is reachable offline, so `source` must be a local folder holding the "
    "model and its feature extractor, written with `model.save_pretrained(folder)` and "
    "`feature_extractor.save_pretrained(folder)` (or a hub id already in the local cache "
    "/ `savedir`)."
)


class PretrainedAudioLoadError(OSError):
    """A pretrained audio model (or its config / feature extractor) could not be loaded."""


@contextlib.contextmanager
def _numpy_seed(seed: Optional[int]):
    """Temporarily seeds NumPy's global RNG (the feature extractors draw crops from it).

    ``seed=None`` leaves the RNG alone. The previous global state is restored on exit.
    """
    if seed is None:
        yield
        return
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


class PretrainedAudioEncoder(nn.Module):
    """Content encoder over the mono mid signal using a pretrained transformers audio model.

    Parameters
    ----------
    source : str
        Hub id or local folder, passed straight to ``from_pretrained`` of ``AutoConfig``,
        ``AutoFeatureExtractor`` and the model class. Offline, this must be a local folder
        written with ``save_pretrained`` (or a hub id present in the cache).
    sample_rate : int, optional
        Sampling rate of the ``mid`` waveforms given to :meth:`forward` (default 16000).
        They are resampled to the feature extractor's rate when the two differ.
    freeze : bool, optional
        If True (default) the model's parameters get ``requires_grad=False``, the model
        stays in eval mode even when a parent module calls ``.train()``, and the forward
        runs under ``torch.no_grad()``. If False the model is fine-tuned; see
        :meth:`pretrained_parameters`.
    output_layer : int, optional
        ``-1`` (default) returns the model's last hidden state. Any other value indexes
        ``hidden_states`` (computed with ``output_hidden_states=True``); index 0 is the
        embedding output, ``i`` the output of layer / stage ``i``; negative values count
        from the end as in Python. (For CLAP, the hidden states are taken before the final
        layer norm, and the channel count depends on the stage: see :attr:`output_dim`.)
    savedir : str, optional
        Download / cache folder (``cache_dir`` of ``from_pretrained``), as in SpeechBrain's
        lobes. None uses the HuggingFace default cache.
    frame_mode : {"tokens", "time"}, optional
        Layout of the output of the spectrogram-patch models (AST, CLAP); ignored by
        raw-waveform models. See the module docstring. Default ``"tokens"``.
    crop_to_input : bool, optional
        Cut off the time steps lying wholly in the feature extractor's padding (AST, CLAP).
        Default True.

    Attributes
    ----------
    output_dim : int
        Feature size of the returned frames.
    model_kind : str
        ``"ast"``, ``"clap"`` or ``"waveform"``.
    model : transformers.PreTrainedModel
        The wrapped audio model (for CLAP: the audio tower only).
    feature_extractor : transformers.FeatureExtractionMixin
        The model's feature extractor (works on NumPy, on the CPU).

    Raises
    ------
    PretrainedAudioLoadError
        If the config, the feature extractor or the weights cannot be loaded from
        ``source`` (the message names ``source``).
    ValueError
        If the config is of a family that is not supported, or an argument is invalid.

    Examples
    --------
    >>> enc = PretrainedAudioEncoder("/models/ast-audioset")  # doctest: +SKIP
    >>> mid = torch.randn(2, 16000)                           # doctest: +SKIP
    >>> # AudioSet AST, 1 s: 10 time steps (100 ms each) x 12 frequency patches
    >>> enc(mid, torch.tensor([1.0, 0.6])).shape              # doctest: +SKIP
    torch.Size([2, 120, 768])
    """

    def __init__(
        self,
        source,
        sample_rate: int = 16000,
        freeze: bool = True,
        output_layer: int = -1,
        savedir=None,
        frame_mode: str = "tokens",
        crop_to_input: bool = True,
    ):
        super().__init__()
        if frame_mode not in ("tokens", "time"):
            raise ValueError(f"frame_mode must be 'tokens' or 'time', got {frame_mode!r}")
        self.source = str(source)
        self.sample_rate = int(sample_rate)
        self.freeze = bool(freeze)
        self.output_layer = int(output_layer)
        self.savedir = savedir
        self.frame_mode = frame_mode
        self.crop_to_input = bool(crop_to_input)

        config = self._load_config()
        self.model_kind = self._dispatch(config)
        self.model = self._load_model(config)
        self.feature_extractor = self._load_feature_extractor()
        self.target_rate = int(getattr(self.feature_extractor, "sampling_rate", self.sample_rate))
        self.output_dim = self._infer_output_dim()

        if self.freeze:
            for p in self.model.parameters():
                p.requires_grad_(False)
            self.model.eval()
            # Frozen weights come from ``source``: checkpoints and exports leave them out.
            self.register_state_dict_post_hook(_drop_frozen_weights)
            self.register_load_state_dict_pre_hook(_restore_frozen_weights)

    def frozen_state_keys(self, prefix=""):
        """The state-dict keys of the wrapped model, left out of saved states when
        frozen."""
        return [prefix + "model." + key for key in self.model.state_dict()]

    # ------------------------------------------------------------------ loading
    def _load_error(self, what: str, exc: BaseException) -> PretrainedAudioLoadError:
        return PretrainedAudioLoadError(
            f"Could not load the {what} of the pretrained audio model from "
            f"source={self.source!r} ({type(exc).__name__}: {exc}). {_OFFLINE_HINT}"
        )

    def _load_config(self):
        from transformers import AutoConfig

        try:
            return AutoConfig.from_pretrained(self.source, cache_dir=self.savedir)
        except Exception as exc:  # OSError, ValueError, HF hub errors, ...
            raise self._load_error("config", exc) from exc

    def _dispatch(self, config) -> str:
        """Family of the model, from the config class / ``model_type``."""
        model_type = getattr(config, "model_type", None)
        cls_name = type(config).__name__
        if model_type in _AST_MODEL_TYPES or cls_name == "ASTConfig":
            return "ast"
        if model_type in _CLAP_MODEL_TYPES or cls_name in ("ClapConfig", "ClapAudioConfig"):
            return "clap"
        if model_type in RAW_WAVEFORM_MODEL_TYPES:
            return "waveform"
        # Unknown type: accept it if its AutoModel takes raw waveforms ("input_values").
        try:
            from transformers import MODEL_MAPPING

            model_cls = MODEL_MAPPING[type(config)]
        except Exception:
            model_cls = None
        if model_cls is not None and getattr(model_cls, "main_input_name", None) == "input_values":
            return "waveform"
        raise ValueError(
            f"Unsupported pretrained audio model at source={self.source!r}: config "
            f"{cls_name} (model_type={model_type!r}). Supported: AST, CLAP (audio tower) and "
            f"raw-waveform encoders of the wav2vec2/HuBERT family."
        )

    def _load_model(self, config):
        kwargs = {"cache_dir": self.savedir, "output_loading_info": True}
        try:
            if self.model_kind == "clap":
                model = self._load_clap(config, kwargs)
            else:
                from transformers import AutoModel

                model, info = AutoModel.from_pretrained(self.source, config=config, **kwargs)
                self._report_loading(info)
        except PretrainedAudioLoadError:
            raise
        except Exception as exc:
            raise self._load_error("weights", exc) from exc
        return model

    def _load_clap(self, config, kwargs):
        from transformers import ClapAudioModel, ClapAudioModelWithProjection, ClapModel

        if type(config).__name__ == "ClapConfig" or getattr(config, "model_type", "") == "clap":
            full, info = ClapModel.from_pretrained(self.source, config=config, **kwargs)
            self._report_loading(
                info, ignore_prefixes=("text_model", "text_projection", "logit_scale")
            )
            return full.audio_model
        archs = getattr(config, "architectures", None) or []
        if any("WithProjection" in a for a in archs):
            full, info = ClapAudioModelWithProjection.from_pretrained(
                self.source, config=config, **kwargs
            )
            self._report_loading(info)
            return full.audio_model
        model, info = ClapAudioModel.from_pretrained(self.source, config=config, **kwargs)
        self._report_loading(info)
        return model

    def _report_loading(self, info, ignore_prefixes: Sequence[str] = ()):
        missing = [
            k
            for k in (info or {}).get("missing_keys", [])
            if not k.startswith(tuple(ignore_prefixes))
        ]
        if missing:
            logger.warning(
                "PretrainedAudioEncoder(%r): %d weights were not in the checkpoint and are "
                "randomly initialised (e.g. %s).",
                self.source,
                len(missing),
                ", ".join(sorted(missing)[:3]),
            )

    def _load_feature_extractor(self):
        from transformers import AutoFeatureExtractor

        try:
            return AutoFeatureExtractor.from_pretrained(self.source, cache_dir=self.savedir)
        except Exception as exc:
            if self.model_kind != "waveform":
                raise self._load_error("feature extractor", exc) from exc
            # Some raw-waveform checkpoints ship no preprocessor_config.json: use defaults.
            from transformers import Wav2Vec2FeatureExtractor

            logger.warning(
                "PretrainedAudioEncoder(%r): no feature extractor found (%s); using "
                "Wav2Vec2FeatureExtractor defaults (16 kHz).",
                self.source,
                exc,
            )
            norm = getattr(self.model.config, "feat_extract_norm", "group")
            return Wav2Vec2FeatureExtractor(
                sampling_rate=16000, do_normalize=True, return_attention_mask=(norm == "layer")
            )

    def _infer_output_dim(self) -> int:
        cfg = self.model.config
        if self.model_kind != "clap":
            return int(cfg.hidden_size)
        # Swin (HTS-AT) stages: channels double at every patch merging (all stages but last).
        n_stages = len(cfg.depths)
        base = int(cfg.patch_embeds_hidden_size)
        if self.output_layer == -1:
            return base * 2 ** (n_stages - 1)
        index = self.output_layer if self.output_layer >= 0 else n_stages + 1 + self.output_layer
        if not 0 <= index <= n_stages:
            raise ValueError(
                f"output_layer={self.output_layer} is out of range for a CLAP audio tower with "
                f"{n_stages} stages (hidden_states has {n_stages + 1} entries)."
            )
        return base * 2 ** min(index, n_stages - 1)

    # ------------------------------------------------------------------ modes
    def train(self, mode: bool = True):
        """Sets training mode; a frozen model stays in eval mode whatever ``mode`` is."""
        super().train(mode)
        if self.freeze:
            self.model.eval()
        return self

    def pretrained_parameters(self) -> Iterator[nn.Parameter]:
        """The wrapped transformer's parameters (e.g. to give them a lower learning rate).

        Returns
        -------
        iterator of torch.nn.Parameter
            ``self.model.parameters()``; empty of trainable ones when ``freeze=True``.
        """
        return self.model.parameters()

    # ------------------------------------------------------------------ forward
    def forward(self, mid: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Encodes a batch of mono (mid) waveforms into content frames.

        Parameters
        ----------
        mid : torch.Tensor
            ``[batch, time]`` mono waveforms (the mid signal ``(L + R) / 2``) at
            ``sample_rate``. A ``[batch, time, 1]`` tensor is accepted too.
        lengths : torch.Tensor, optional
            ``[batch]`` relative lengths in ``(0, 1]`` as SpeechBrain gives them; each item
            is trimmed to ``round(lengths[i] * time)`` samples (then resampled, if needed)
            before feature extraction.
            None means every item is full length.

        Returns
        -------
        torch.Tensor
            ``[batch, frames, output_dim]`` float32 frames on ``mid``'s device. ``frames``
            depends on the model family and ``frame_mode`` (see the module docstring); it
            covers the batch's longest item, so ``lengths`` remain valid as relative
            lengths of the frames (approximately, up to the frame hop).
        """
        if mid.dim() == 3 and mid.shape[-1] == 1:
            mid = mid.squeeze(-1)
        if mid.dim() != 2:
            raise ValueError(f"mid must be [batch, time], got shape {tuple(mid.shape)}")
        device = mid.device
        batch, n_samples = mid.shape
        if lengths is None:
            rel = torch.ones(batch)
        else:
            rel = lengths.detach().float().cpu().reshape(-1)
            if rel.numel() != batch:
                raise ValueError(f"lengths has {rel.numel()} entries for a batch of {batch}")

        # Trim each item to its true length first (so that the padding never leaks into
        # it, e.g. through the resampling filter), then resample it on its own.
        wav = mid.detach().float().cpu()
        item_lens = [max(1, min(n_samples, int(round(float(r) * n_samples)))) for r in rel]
        items_t = [wav[i, : item_lens[i]] for i in range(batch)]
        if self.target_rate != self.sample_rate:
            import torchaudio.functional as AF

            items_t = [AF.resample(x, self.sample_rate, self.target_rate) for x in items_t]
        items = [x.contiguous().numpy() for x in items_t]
        longest = max(len(x) for x in items)

        grad_ctx = torch.no_grad() if self.freeze else contextlib.nullcontext()
        with grad_ctx:
            if self.model_kind == "ast":
                frames = self._forward_ast(items, longest)
            elif self.model_kind == "clap":
                frames = self._forward_clap(items, longest)
            else:
                frames = self._forward_waveform(items)
        return frames.to(device=device, dtype=torch.float32)

    def _model_device_dtype(self):
        p = next(self.model.parameters())
        return p.device, p.dtype

    def _select_hidden(self, outputs):
        if self.output_layer == -1:
            return outputs.last_hidden_state
        return outputs.hidden_states[self.output_layer]

    def _forward_kwargs(self):
        return {"output_hidden_states": True} if self.output_layer != -1 else {}

    # AST ---------------------------------------------------------------------
    def _forward_ast(self, items: List[np.ndarray], longest: int) -> torch.Tensor:
        fe = self.feature_extractor
        cfg = self.model.config
        feats = fe(items, sampling_rate=self.target_rate, return_tensors="np")
        device, dtype = self._model_device_dtype()
        input_values = torch.as_tensor(np.asarray(feats["input_values"])).to(
            device=device, dtype=dtype
        )
        outputs = self.model(input_values=input_values, **self._forward_kwargs())
        hidden = self._select_hidden(outputs)[:, 2:, :]  # drop CLS + distillation tokens
        # Patch grid: tokens are ordered frequency-major (f * n_time + t).
        n_freq = (cfg.num_mel_bins - cfg.patch_size) // cfg.frequency_stride + 1
        n_time = (cfg.max_length - cfg.patch_size) // cfg.time_stride + 1
        b, _, c = hidden.shape
        grid = hidden.reshape(b, n_freq, n_time, c).permute(0, 2, 1, 3)  # [B, T', F', C]
        if self.crop_to_input:
            # Kaldi fbank frames of the longest item (25 ms window, 10 ms shift, snip edges).
            win = int(round(0.025 * self.target_rate))
            hop = int(round(0.010 * self.target_rate))
            n_fbank = 1 + max(0, longest - win) // hop
            keep = min(n_time, max(1, math.ceil(min(n_fbank, cfg.max_length) / cfg.time_stride)))
            grid = grid[:, :keep]
        return self._grid_to_frames(grid)

    def _grid_to_frames(self, grid: torch.Tensor) -> torch.Tensor:
        """``[B, time, freq, C]`` patch grid -> ``[B, frames, C]`` per ``frame_mode``."""
        if self.frame_mode == "time":
            return grid.mean(dim=2)
        b, t, f, c = grid.shape
        return grid.reshape(b, t * f, c)

    # CLAP --------------------------------------------------------------------
    def _forward_clap(self, items: List[np.ndarray], longest: int) -> torch.Tensor:
        fe = self.feature_extractor
        cfg = self.model.config
        max_samples = int(getattr(fe, "nb_max_samples", longest))
        # Eval: fixed seed for the extractor's random crops of over-long inputs.
        seed = None if self.model.training else 0
        with _numpy_seed(seed):
            feats = fe(items, sampling_rate=self.target_rate, return_tensors="np")
        device, dtype = self._model_device_dtype()
        input_features = torch.as_tensor(np.asarray(feats["input_features"])).to(
            device=device, dtype=dtype
        )
        enable_fusion = bool(getattr(cfg, "enable_fusion", False))
        if not enable_fusion and input_features.shape[1] > 1:
            # "fusion" features given to an unfused model: keep the global (first) mel.
            input_features = input_features[:, :1]
        # The extractor marks a random item as "longer" when none is (a training trick):
        # use the true flags instead, so the output is deterministic.
        is_longer = torch.tensor([[len(x) > max_samples] for x in items], device=device)
        kwargs = self._forward_kwargs()
        if enable_fusion:
            kwargs["is_longer"] = is_longer
        outputs = self.model(input_features=input_features, **kwargs)
        hidden = self._select_hidden(outputs)  # [B, C, H, W]
        if self.output_layer == -1:
            # transformers already unfolded the Swin image to [B, C, freq, time].
            fmap = hidden
        else:
            # Hidden states are in the Swin "image" layout: the spectrogram's time axis was
            # cut into freq_ratio chunks stacked along the height. Unfold them back to time.
            ratio = max(1, int(cfg.spec_size // cfg.num_mel_bins))
            b, c, h, w = hidden.shape
            if h % ratio:
                raise ValueError(
                    f"CLAP hidden state height {h} is not divisible by freq_ratio {ratio}"
                )
            fmap = (
                hidden.reshape(b, c, ratio, h // ratio, w)
                .permute(0, 1, 3, 2, 4)
                .reshape(b, c, h // ratio, ratio * w)
            )
        grid = fmap.permute(0, 3, 2, 1)  # [B, time, freq, C]
        if self.crop_to_input and max_samples > 0:
            frac = min(1.0, longest / max_samples)
            n_time = grid.shape[1]
            keep = min(n_time, max(1, math.ceil(frac * n_time)))
            grid = grid[:, :keep]
        return self._grid_to_frames(grid)

    # wav2vec2 / HuBERT family -------------------------------------------------
    def _forward_waveform(self, items: List[np.ndarray]) -> torch.Tensor:
        fe = self.feature_extractor
        use_mask = bool(getattr(fe, "return_attention_mask", False))
        feats = fe(
            items,
            sampling_rate=self.target_rate,
            padding=True,
            return_attention_mask=use_mask,
            return_tensors="np",
        )
        device, dtype = self._model_device_dtype()
        name = (
            "input_values"
            if "input_values" in feats
            else getattr(self.model, "main_input_name", "input_values")
        )
        inputs = {name: torch.as_tensor(np.asarray(feats[name])).to(device=device, dtype=dtype)}
        if use_mask and "attention_mask" in feats:
            inputs["attention_mask"] = torch.as_tensor(np.asarray(feats["attention_mask"])).to(
                device
            )
        outputs = self.model(**inputs, **self._forward_kwargs())
        return self._select_hidden(outputs)

    def extra_repr(self) -> str:
        return (
            f"source={self.source!r}, kind={self.model_kind}, output_dim={self.output_dim}, "
            f"sample_rate={self.sample_rate}->{self.target_rate}, freeze={self.freeze}, "
            f"output_layer={self.output_layer}, frame_mode={self.frame_mode!r}"
        )


def _drop_frozen_weights(module, state_dict, prefix, local_metadata):
    """State-dict post hook: removes the frozen model's weights (loaded from source)."""
    for key in module.frozen_state_keys(prefix):
        state_dict.pop(key, None)


def _restore_frozen_weights(module, state_dict, prefix, *args):
    """Load pre hook: a state saved without the frozen weights gets the loaded ones, so
    strict loading accepts it."""
    current = module.model.state_dict()
    for key, value in current.items():
        state_dict.setdefault(prefix + "model." + key, value)
