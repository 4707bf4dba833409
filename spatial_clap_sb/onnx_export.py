"""Export of the audio and text towers to ONNX, for deployment without PyTorch.

:func:`export_onnx` writes the audio tower of an exported model folder
(:class:`~spatial_clap_sb.models.spatial_clap.SpatialAudioEncoder`) as one ONNX file::

    wavs       float32 [batch, time, 2]  stereo, channel 0 left, at the model's rate
    embedding  float32 [batch, dim]      unit norm, the same space as the text tower

Batch and time are dynamic. The graph embeds each item at its full length: it has no
``lengths`` input, so feed windows of equal length (no zero padding), as
:meth:`~spatial_clap_sb.inference.SpatialCLAP.encode_signals` does. The file's
``metadata_props`` say what to feed: ``sample_rate``, ``embedding_dim`` and
``chunk_samples`` (the training window in samples; longer recordings are embedded
window by window and the mean is normalised again, see
:mod:`spatial_clap_sb.inference`).

How it exports. A deep copy of the encoder in eval mode is exported; the loaded model
keeps its own modules and numerics. In the copy (:func:`make_exportable`):

- SpeechBrain's ``STFT`` (a complex ``torch.stft``, which the TorchScript-based
  exporter refuses) becomes :class:`RealSTFT`, the same transform as a real-valued
  framed DFT (frames times one matrix holding the window, cosines and sines) with the
  same window, centre padding, pad mode, ``n_fft``, hop and normalisation, and the same
  output layout (ONNX Runtime runs this product faster than its own ``STFT``);
- a one-layer, batch-first ``nn.GRU`` becomes :class:`ExportableGRU`, a custom
  operator that PyTorch runs with its own GRU kernel and that the exporter writes as
  the ONNX ``GRU`` operator. Left as it is, the GRU is expanded by the exporter into
  one step per frame, which fails (or fixes the number of frames) when time is
  dynamic.

The graph is captured by the ``torch.export``-based exporter
(``torch.onnx.export(..., dynamo=True)``), which needs ``onnxscript``.
:func:`check_onnx_parity` runs the file with ONNX Runtime against PyTorch and
:func:`onnx_throughput` times it.

:func:`export_text_onnx` writes the text tower (transformer, pooling, projection) as a
second file: ``input_ids`` and ``attention_mask`` (int64 ``[clauses, pieces, tokens]``)
-> ``clause_embedding`` (float32 ``[clauses, dim]``, unit norm). Splitting a caption
into clauses and pieces and tokenising them is Python (:func:`text_clause_inputs`), and
a caption's embedding is the normalised sum of its clause embeddings
(:func:`check_text_onnx_parity` does both).

Install the tools with ``pip install "spatial-clap-sb[onnx]"``.

Example
-------
>>> from spatial_clap_sb.onnx_export import check_onnx_parity, export_onnx
>>> path = export_onnx("results/spatial_clap/1234/model", "audio_tower.onnx")
... # doctest: +SKIP
>>> check_onnx_parity("results/spatial_clap/1234/model", path) < 1e-4  # doctest: +SKIP
True
"""
import copy
import importlib
import logging
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from speechbrain.processing.features import STFT
from torch import nn

__all__ = [
    "DEFAULT_OPSET", "INPUT_NAME", "OUTPUT_NAME", "PARITY_TOLERANCE", "TEXT_INPUT_NAMES",
    "TEXT_OUTPUT_NAME", "ExportableGRU", "RealSTFT", "audio_tower_metadata",
    "check_onnx_parity", "check_onnx_tools", "check_text_onnx_parity", "export_onnx",
    "export_text_onnx", "make_exportable", "onnx_throughput", "random_stereo",
    "text_clause_inputs", "text_tower_metadata",
]

INPUT_NAME = "wavs"
OUTPUT_NAME = "embedding"
TEXT_INPUT_NAMES = ("input_ids", "attention_mask")
TEXT_OUTPUT_NAME = "clause_embedding"  # not "embedding": a node of the graph has it
DEFAULT_OPSET = 18
PARITY_TOLERANCE = 1e-4  # largest accepted |ONNX Runtime - PyTorch| of an embedding
THROUGHPUT_CLIP_SECONDS = 10.0
TEXT_CHECK_CAPTIONS = ("a dog barks on the left",
                       "to the right a bell rings, while rain falls ahead")
ONNX_TOOLS = ("onnx", "onnxscript", "onnxruntime")
INSTALL_HINT = 'pip install "spatial-clap-sb[onnx]"'
GRU_OP_NAME = "spatial_clap_sb::gru_full_length"
# The exporter's logger that reports, on every export, that torchvision is missing.
REGISTRATION_LOGGER = "torch.onnx._internal.exporter._registration"


# ---------------------------------------------------------------------------- STFT


class RealSTFT(nn.Module):
    """SpeechBrain's ``STFT`` as a real-valued framed DFT, exportable to ONNX.

    The signal is cut into frames (hop-sized blocks side by side, so no gather is
    needed) and multiplied by a ``[n_fft, 2 * n_freq]`` matrix holding the window
    (zero-padded to ``n_fft`` in the middle, as ``torch.stft`` does) times cosines and
    minus sines, interleaved so that the product already has the ``(re, im)`` layout:
    the real part is ``sum(x w cos)`` and the imaginary part ``-sum(x w sin)``, as in
    ``torch.stft``. Padding, normalisation and the output layout are SpeechBrain's.

    Arguments
    ---------
    stft : speechbrain.processing.features.STFT
        The module to reproduce (its window, ``n_fft``, hop, ``center``,
        ``pad_mode``, ``normalized_stft`` and ``onesided``).

    Example
    -------
    >>> stft = STFT(sample_rate=16000, win_length=32, hop_length=25, n_fft=512)
    >>> wavs = torch.randn(2, 16000, 2)
    >>> (RealSTFT(stft)(wavs) - stft(wavs)).abs().max() < 1e-3
    tensor(True)
    """

    def __init__(self, stft):
        super().__init__()
        self.n_fft, self.hop_length = stft.n_fft, stft.hop_length
        self.center, self.pad_mode = stft.center, stft.pad_mode
        self.n_freq = self.n_fft // 2 + 1 if stft.onesided else self.n_fft
        self.blocks_per_frame = -(-self.n_fft // self.hop_length)
        self.register_buffer("dft", self._dft_matrix(stft), persistent=False)

    def _dft_matrix(self, stft):
        """``[n_fft, 2 * n_freq]``: columns cos, -sin of each bin, times the window."""
        window = stft.window.detach().to(torch.float64).cpu()
        left = (self.n_fft - window.numel()) // 2
        window = F.pad(window, (left, self.n_fft - window.numel() - left))
        samples = torch.arange(self.n_fft, dtype=torch.float64)
        bins = torch.arange(self.n_freq, dtype=torch.float64)
        angle = 2 * math.pi * torch.outer(samples, bins) / self.n_fft
        scale = self.n_fft ** -0.5 if stft.normalized_stft else 1.0
        matrix = torch.stack([torch.cos(angle), -torch.sin(angle)], dim=-1)
        return (matrix * window[:, None, None] * scale).flatten(1).to(torch.float32)

    def _frames(self, signals):
        """``[n, time]`` (padded) -> ``[n, frames, n_fft]``."""
        hop, count = self.hop_length, self.blocks_per_frame
        n_frames = (signals.shape[1] - self.n_fft) // hop + 1
        signals = F.pad(signals, (0, count * hop))  # the last frame's last block
        blocks = signals[:, :(n_frames + count - 1) * hop]
        blocks = blocks.reshape(signals.shape[0], n_frames + count - 1, hop)
        frames = torch.cat([blocks[:, i:i + n_frames] for i in range(count)], dim=2)
        return frames[:, :, :self.n_fft]

    def _transform(self, signals):
        """``[n, time]`` -> ``[n, frames, n_freq, 2]``."""
        if self.center:
            half = self.n_fft // 2
            signals = F.pad(signals[:, None], (half, half), mode=self.pad_mode)[:, 0]
        spectra = self._frames(signals) @ self.dft
        return spectra.unflatten(2, (self.n_freq, 2))

    def forward(self, x):
        """``[batch, time]`` -> ``[batch, frames, n_freq, 2]``; ``[batch, time,
        channels]`` -> ``[batch, frames, n_freq, 2, channels]`` (as SpeechBrain)."""
        if x.dim() == 2:
            return self._transform(x)
        batch, channels = x.shape[0], x.shape[2]
        spectra = self._transform(x.transpose(1, 2).reshape(batch * channels, x.shape[1]))
        spectra = spectra.reshape(batch, channels, *spectra.shape[1:])
        return spectra.permute(0, 2, 3, 4, 1)


# ---------------------------------------------------------------------------- GRU


@torch.library.custom_op(GRU_OP_NAME, mutates_args=())
def _gru_full_length(frames: torch.Tensor, weight_ih: torch.Tensor,
                     weight_hh: torch.Tensor, bias_ih: torch.Tensor,
                     bias_hh: torch.Tensor) -> torch.Tensor:
    """A one-layer batch-first GRU from a zero state, weights in ONNX's layout."""
    directions, hidden = weight_hh.shape[0], weight_hh.shape[2]
    params = []
    for d in range(directions):  # back to PyTorch's gate order
        params += [_swap_first_gates(w[d]) for w in (weight_ih, weight_hh, bias_ih,
                                                     bias_hh)]
    state = frames.new_zeros(directions, frames.shape[0], hidden)
    output, _ = torch.gru(frames, state, params, True, 1, 0.0, False, directions == 2,
                          True)
    return output


@_gru_full_length.register_fake
def _(frames, weight_ih, weight_hh, bias_ih, bias_hh):
    width = weight_hh.shape[0] * weight_hh.shape[2]
    return frames.new_empty(frames.shape[0], frames.shape[1], width)


def _swap_first_gates(weight):
    """Swaps the first two gate blocks: PyTorch's (r, z, n) <-> ONNX's (z, r, h)."""
    r, z, n = weight.chunk(3, dim=0)
    return torch.cat([z, r, n])


def _onnx_gru(frames, weight_ih, weight_hh, bias_ih, bias_hh):
    """The ONNX ``GRU`` operator for :func:`_gru_full_length` (ONNX Script)."""
    from onnxscript import opset18 as op

    directions, hidden = weight_hh.shape[0], weight_hh.shape[2]
    sequence_first = op.Transpose(frames, perm=[1, 0, 2])
    output, _ = op.GRU(sequence_first, weight_ih, weight_hh,
                       op.Concat(bias_ih, bias_hh, axis=1), hidden_size=hidden,
                       direction="bidirectional" if directions == 2 else "forward",
                       linear_before_reset=1)  # [time, directions, batch, hidden]
    batch_first = op.Transpose(output, perm=[2, 0, 1, 3])
    return op.Reshape(batch_first, op.Constant(value_ints=[0, 0, -1]))


class ExportableGRU(nn.Module):
    """A one-layer, batch-first ``nn.GRU`` from a zero state, exported as ONNX ``GRU``.

    It computes what the GRU computes (PyTorch's own kernel runs it), holding the
    weights in ONNX's layout (gates ``z, r, h``, directions stacked), and returns
    ``(output, None)``: the final state is not computed.

    Arguments
    ---------
    gru : torch.nn.GRU
        One layer, ``batch_first=True``, with biases.

    Example
    -------
    >>> gru = nn.GRU(8, 4, batch_first=True, bidirectional=True)
    >>> frames = torch.randn(2, 5, 8)
    >>> torch.allclose(ExportableGRU(gru)(frames)[0], gru(frames)[0], atol=1e-6)
    True
    """

    def __init__(self, gru):
        super().__init__()
        if not self.supports(gru):
            raise ValueError("ExportableGRU takes a one-layer, batch-first GRU with "
                             "biases and no projection.")
        suffixes = ["", "_reverse"] if gru.bidirectional else [""]
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            stacked = torch.stack([_swap_first_gates(getattr(gru, f"{name}_l0{s}"))
                                   for s in suffixes]).detach().clone()
            self.register_buffer(name, stacked)

    @staticmethod
    def supports(gru):
        """Whether ``gru`` is a GRU this module replaces."""
        return (isinstance(gru, nn.GRU) and gru.num_layers == 1 and gru.batch_first
                and gru.bias and getattr(gru, "proj_size", 0) == 0)

    def forward(self, frames, state=None):
        """``[batch, time, input]`` -> (``[batch, time, directions * hidden]``, None)."""
        if state is not None:
            raise ValueError("ExportableGRU starts from a zero state.")
        return _gru_full_length(frames, self.weight_ih, self.weight_hh, self.bias_ih,
                                self.bias_hh), None


def make_exportable(encoder):
    """An eval-mode, CPU deep copy of ``encoder`` with its STFTs and GRUs replaced.

    Arguments
    ---------
    encoder : torch.nn.Module
        The audio tower (left untouched).

    Returns
    -------
    torch.nn.Module
        The copy, with :class:`RealSTFT` for SpeechBrain's ``STFT`` and
        :class:`ExportableGRU` for the one-layer batch-first GRUs.
    """
    exportable = copy.deepcopy(encoder).cpu().float().eval()
    for module in list(exportable.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, STFT):
                setattr(module, name, RealSTFT(child))
            elif ExportableGRU.supports(child):
                setattr(module, name, ExportableGRU(child))
    return exportable


# ---------------------------------------------------------------------------- export


class _FullLengthAudioTower(nn.Module):
    """``wavs [batch, time, 2]`` -> ``embedding [batch, dim]``, without lengths."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, wavs):
        return F.normalize(self.encoder(wavs), dim=-1)


def _as_model(model, savedir=None, trust_remote_code=False):
    """``model`` if it is a loaded SpatialCLAP; else the model folder it names, loaded."""
    if not isinstance(model, (str, os.PathLike)):
        return model
    from spatial_clap_sb.inference import SpatialCLAP

    folder = os.fspath(model)
    if not os.path.isfile(os.path.join(folder, "hyperparams.yaml")):
        raise FileNotFoundError(f"{folder} is not an exported Spatial-CLAP model folder "
                                "(no hyperparams.yaml)")
    return SpatialCLAP.from_hparams(source=os.path.abspath(folder), savedir=savedir,
                                    trust_remote_code=trust_remote_code)


def audio_tower_metadata(model):
    """The ``metadata_props`` written into the ONNX file (all values are strings).

    Arguments
    ---------
    model : SpatialCLAP
        The loaded model.

    Returns
    -------
    dict of str -> str
        ``sample_rate`` (Hz), ``embedding_dim``, ``chunk_samples`` (the training window
        in samples), ``chunk_seconds``, ``input`` and ``output`` (what they hold).
    """
    return {
        "sample_rate": str(model.sample_rate),
        "embedding_dim": str(model.mods.audio_encoder.projection.output_dim),
        "chunk_samples": str(model.chunk_samples),
        "chunk_seconds": str(model.chunk_seconds),
        "input": f"{INPUT_NAME}: float32 [batch, time, 2], channel 0 left, at "
                 "sample_rate, full length (no padding)",
        "output": f"{OUTPUT_NAME}: float32 [batch, embedding_dim], unit norm",
    }


def _require(module_name):
    try:
        return importlib.import_module(module_name)
    except ImportError as error:
        raise ImportError(f"The ONNX export needs {module_name}, which is not "
                          f"installed: {INSTALL_HINT}") from error


def check_onnx_tools(opset=DEFAULT_OPSET):
    """Checks that an export can run: the ONNX tools import and ``opset`` is supported.

    Raises
    ------
    ImportError
        Naming the missing tool and the install command.
    ValueError
        For an opset below :data:`DEFAULT_OPSET`.
    """
    for name in ONNX_TOOLS:
        _require(name)
    if opset < DEFAULT_OPSET:
        raise ValueError(f"opset must be at least {DEFAULT_OPSET}, got {opset}")


class _SkipTorchvisionNotice(logging.Filter):
    """Drops the exporter's notices that torchvision (never used here) is missing."""

    def filter(self, record):
        return not record.getMessage().startswith("torchvision is not installed")


def export_onnx(model, output_path, opset=DEFAULT_OPSET, savedir=None,
                trust_remote_code=False):
    """Exports the audio tower of a Spatial-CLAP model to one ONNX file.

    The graph takes ``wavs`` (float32 ``[batch, time, 2]``, channel 0 left, at the
    model's sample rate; batch and time dynamic, every item at full length) and gives
    ``embedding`` (float32 ``[batch, embedding_dim]``, unit norm). The file's
    ``metadata_props`` hold :func:`audio_tower_metadata`. See the module docstring for
    how the STFT and the GRU are exported.

    Arguments
    ---------
    model : str or SpatialCLAP
        An exported model folder, or a loaded model (not modified).
    output_path : str
        The ``.onnx`` file to write (its folder is created).
    opset : int
        ONNX opset (18 or later).
    savedir : str, optional
        SpeechBrain's link folder when ``model`` is a folder.
    trust_remote_code : bool
        Load a folder that runs code of its own (see ``SpatialCLAP.from_hparams``).

    Returns
    -------
    str
        ``output_path``.

    Raises
    ------
    ImportError
        Without ``onnx``, ``onnxscript`` or ``onnxruntime``.
    ValueError
        For an opset below 18.
    RuntimeError
        If the exporter fails.

    Example
    -------
    >>> export_onnx("results/spatial_clap/1234/model", "audio_tower.onnx")
    ... # doctest: +SKIP
    'audio_tower.onnx'
    """
    model = _as_model(model, savedir, trust_remote_code)
    tower = _FullLengthAudioTower(make_exportable(model.mods.audio_encoder)).eval()
    example = torch.zeros(2, model.chunk_samples, 2)
    program = _run_exporter(
        tower, (example,), opset, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
        dynamic_shapes={INPUT_NAME: {0: "batch", 1: "time"}}, what="audio tower",
        custom_translation_table={
            torch.ops.spatial_clap_sb.gru_full_length.default: _onnx_gru})
    return _save(program, audio_tower_metadata(model), output_path)


def _run_exporter(module, example_inputs, opset, what, **options):
    """``torch.onnx.export(module, ..., dynamo=True)``; returns the ONNXProgram.

    Arguments
    ---------
    module : torch.nn.Module
        In eval mode.
    example_inputs : tuple of torch.Tensor
    opset : int
    what : str
        Names the module in the error message.
    **options
        Passed on (names, ``dynamic_shapes``, ``custom_translation_table``).
    """
    check_onnx_tools(opset)
    registration_log = logging.getLogger(REGISTRATION_LOGGER)
    notice_filter = _SkipTorchvisionNotice()
    registration_log.addFilter(notice_filter)
    try:
        return torch.onnx.export(module, example_inputs, dynamo=True,
                                 opset_version=opset, verbose=False, **options)
    except torch.onnx.errors.OnnxExporterError as error:
        first_line = next((line for line in str(error).splitlines() if line.strip()),
                          type(error).__name__)
        raise RuntimeError(f"ONNX export of the {what} failed: {first_line}") from error
    finally:
        registration_log.removeFilter(notice_filter)


def _save(program, metadata, output_path):
    """Writes an ONNXProgram with ``metadata`` in its ``metadata_props``."""
    for key, value in metadata.items():
        program.model.metadata_props[key] = value
    os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
    program.save(os.fspath(output_path))
    return output_path


# ---------------------------------------------------------------------------- text


class _ClauseTextTower(nn.Module):
    """Pre-tokenised clauses -> unit-norm clause embeddings (the text tower's graph).

    ``input_ids`` and ``attention_mask`` are ``[clauses, pieces, tokens]``: each piece
    runs through the transformer on its own, the token states of a clause's pieces are
    pooled together (attention or mean pooling ignore token order, so the padding
    between pieces does not matter) and projected, as
    :meth:`~spatial_clap_sb.models.text.TextEncoder.forward_joined` does.
    """

    def __init__(self, text_tower):
        super().__init__()
        encoder = text_tower.text_encoder
        self.transformer = (encoder.frozen_model() if encoder.frozen
                            else encoder.transformer)
        self.attention_pooling = encoder.attention_pooling
        self.projection = text_tower.projection

    def forward(self, input_ids, attention_mask):
        clauses, pieces, tokens = input_ids.shape
        states = self.transformer(
            input_ids=input_ids.reshape(clauses * pieces, tokens),
            attention_mask=attention_mask.reshape(clauses * pieces, tokens),
        ).last_hidden_state
        states = states.reshape(clauses, pieces * tokens, states.shape[-1])
        mask = attention_mask.reshape(clauses, pieces * tokens) > 0
        if self.attention_pooling is not None:
            pooled = self.attention_pooling(states, mask)
        else:
            weights = mask.unsqueeze(-1).to(states.dtype)
            pooled = (states * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return F.normalize(self.projection(pooled), dim=-1)


def text_tower_metadata(model):
    """The ``metadata_props`` of the text tower's ONNX file (all values are strings).

    Arguments
    ---------
    model : SpatialCLAP
        The loaded model.

    Returns
    -------
    dict of str -> str
        ``text_source`` (whose tokenizer to use), ``max_tokens`` (per piece),
        ``compose_clauses``, ``split_roles``, ``embedding_dim``, ``input`` and
        ``output``.
    """
    tower = model.mods.text_tower
    return {
        "text_source": str(tower.text_encoder.source),
        "max_tokens": str(tower.text_encoder.max_length),
        "compose_clauses": str(tower.compose_clauses),
        "split_roles": str(tower.split_roles),
        "embedding_dim": str(tower.projection.output_dim),
        "input": f"{TEXT_INPUT_NAMES[0]}, {TEXT_INPUT_NAMES[1]}: int64 [clauses, "
                 "pieces, tokens], each piece tokenised on its own by the text_source "
                 "tokenizer (at most max_tokens), padded with attention_mask 0",
        "output": f"{TEXT_OUTPUT_NAME}: float32 [clauses, embedding_dim], unit norm; a "
                  "caption's embedding is the normalised sum of its clauses'",
    }


def text_clause_inputs(model, caption):
    """``input_ids`` and ``attention_mask`` (int64 ``[clauses, pieces, tokens]``) of
    one caption, for the text tower's ONNX file.

    The caption is split into clauses and pieces as the model does
    (``TextTower.clause_pieces``) and each piece is tokenised on its own.

    Arguments
    ---------
    model : SpatialCLAP
        The loaded model (its tokenizer and zone vocabulary).
    caption : str

    Returns
    -------
    dict of str -> numpy.ndarray

    Example
    -------
    >>> feed = text_clause_inputs(model, "a dog barks on the left")  # doctest: +SKIP
    >>> session.run(None, feed)[0].shape  # doctest: +SKIP
    (1, 512)
    """
    tower = model.mods.text_tower
    clauses = tower.clause_pieces(caption)
    tokenizer = tower.text_encoder.tokenizer
    n_pieces = max(len(pieces) for pieces in clauses)
    encoded = [tokenizer(list(pieces), truncation=True,
                         max_length=tower.text_encoder.max_length)["input_ids"]
               for pieces in clauses]
    n_tokens = max(len(ids) for pieces in encoded for ids in pieces)
    input_ids = np.full((len(clauses), n_pieces, n_tokens), tokenizer.pad_token_id or 0,
                        dtype=np.int64)
    attention_mask = np.zeros_like(input_ids)
    for c, pieces in enumerate(encoded):
        for p, ids in enumerate(pieces):
            input_ids[c, p, :len(ids)] = ids
            attention_mask[c, p, :len(ids)] = 1
    return {TEXT_INPUT_NAMES[0]: input_ids, TEXT_INPUT_NAMES[1]: attention_mask}


def export_text_onnx(model, output_path, opset=DEFAULT_OPSET, savedir=None,
                     trust_remote_code=False):
    """Exports the text tower (transformer, pooling, projection) of one clause batch.

    The graph takes ``input_ids`` and ``attention_mask`` (int64 ``[clauses, pieces,
    tokens]``, all three dynamic; see :func:`text_clause_inputs`) and gives
    ``clause_embedding`` (float32 ``[clauses, embedding_dim]``, unit norm). Splitting a
    caption into clauses and pieces, tokenising, and the caption's embedding (the
    normalised sum of its clause embeddings) stay outside the graph. The file's
    ``metadata_props`` hold :func:`text_tower_metadata`.

    Arguments
    ---------
    model, output_path, opset, savedir, trust_remote_code
        As in :func:`export_onnx`.

    Returns
    -------
    str
        ``output_path``.

    Example
    -------
    >>> export_text_onnx("results/spatial_clap/1234/model", "text_tower.onnx")
    ... # doctest: +SKIP
    'text_tower.onnx'
    """
    model = _as_model(model, savedir, trust_remote_code)
    tower = _ClauseTextTower(copy.deepcopy(model.mods.text_tower)).cpu().float().eval()
    # Two clauses of two pieces: a size of 1 would be fixed in the graph.
    example = [torch.from_numpy(np.tile(array[:1, :1], (2, 2, 1)))
               for array in text_clause_inputs(model, "a dog barks").values()]
    axes = {0: "clauses", 1: "pieces", 2: "tokens"}
    program = _run_exporter(
        tower, tuple(example), opset,
        input_names=list(TEXT_INPUT_NAMES), output_names=[TEXT_OUTPUT_NAME],
        dynamic_shapes={name: axes for name in TEXT_INPUT_NAMES}, what="text tower")
    return _save(program, text_tower_metadata(model), output_path)


# ---------------------------------------------------------------------------- checks


def _session(onnx_path, threads=None):
    onnxruntime = _require("onnxruntime")
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(os.fspath(onnx_path), options,
                                        providers=["CPUExecutionProvider"])


def random_stereo(batch_size, n_samples, seed=0):
    """Gaussian stereo noise ``[batch, n_samples, 2]`` (float32, std 0.1)."""
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal((batch_size, n_samples, 2))).astype(np.float32)


def check_onnx_parity(model, onnx_path, batch_size=2, seconds=None, seed=0,
                      threads=None, savedir=None, trust_remote_code=False):
    """Largest absolute difference between ONNX Runtime and PyTorch embeddings.

    Arguments
    ---------
    model : str or SpatialCLAP
        The model folder or loaded model the file was exported from.
    onnx_path : str
        The file of :func:`export_onnx`.
    batch_size : int
        Random stereo clips compared.
    seconds : float, optional
        Their length (default: the model's ``chunk_seconds``).
    seed : int
        Seed of the random input.
    threads : int, optional
        ONNX Runtime threads (default: its own choice).
    savedir, trust_remote_code
        As in :func:`export_onnx`, when ``model`` is a folder.

    Returns
    -------
    float
        ``max |embedding_onnx - embedding_torch|`` over the batch.

    Example
    -------
    >>> check_onnx_parity("results/spatial_clap/1234/model", "audio_tower.onnx")
    ... # doctest: +SKIP
    3.2e-07
    """
    model = _as_model(model, savedir, trust_remote_code)
    seconds = model.chunk_seconds if seconds is None else seconds
    wavs = random_stereo(batch_size, round(seconds * model.sample_rate), seed)
    onnx_embeddings = _session(onnx_path, threads).run([OUTPUT_NAME],
                                                       {INPUT_NAME: wavs})[0]
    torch_embeddings = model.encode_audio(torch.from_numpy(wavs)).cpu().numpy()
    return float(np.abs(onnx_embeddings - torch_embeddings).max())


def check_text_onnx_parity(model, onnx_path, captions, threads=None, savedir=None,
                           trust_remote_code=False):
    """Largest absolute difference between caption embeddings of ONNX Runtime (the
    normalised sum of the clause embeddings of :func:`export_text_onnx`) and PyTorch
    (``encode_text``).

    Arguments
    ---------
    model : str or SpatialCLAP
        The model folder or loaded model the file was exported from.
    onnx_path : str
        The file of :func:`export_text_onnx`.
    captions : list of str
    threads, savedir, trust_remote_code
        As in :func:`check_onnx_parity`.

    Returns
    -------
    float

    Example
    -------
    >>> check_text_onnx_parity(model, "text_tower.onnx", ["a dog barks on the left"])
    ... # doctest: +SKIP
    1.1e-07
    """
    model = _as_model(model, savedir, trust_remote_code)
    session = _session(onnx_path, threads)
    onnx_embeddings = []
    for caption in captions:
        clauses = session.run([TEXT_OUTPUT_NAME], text_clause_inputs(model, caption))[0]
        total = clauses.sum(axis=0)
        onnx_embeddings.append(total / max(np.linalg.norm(total), 1e-12))
    torch_embeddings = model.encode_text(list(captions)).cpu().numpy()
    return float(np.abs(np.stack(onnx_embeddings) - torch_embeddings).max())


def onnx_throughput(onnx_path, sample_rate, seconds=10.0, batch_size=8, repeats=1,
                    threads=None):
    """Seconds of audio ONNX Runtime embeds per second of wall time.

    Arguments
    ---------
    onnx_path : str
        The file of :func:`export_onnx`.
    sample_rate : int
        The model's sample rate.
    seconds : float
        Length of each clip.
    batch_size : int
        Clips per run.
    repeats : int
        Timed runs (after one untimed warm-up run); the fastest counts.
    threads : int, optional
        ONNX Runtime threads.

    Returns
    -------
    float

    Example
    -------
    >>> onnx_throughput("audio_tower.onnx", 16000)  # doctest: +SKIP
    950.3
    """
    session = _session(onnx_path, threads)
    feed = {INPUT_NAME: random_stereo(batch_size, round(seconds * sample_rate))}
    session.run([OUTPUT_NAME], feed)
    best = math.inf
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        session.run([OUTPUT_NAME], feed)
        best = min(best, time.perf_counter() - start)
    return batch_size * seconds / best
