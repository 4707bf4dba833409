"""Inference interface of a trained Spatial-CLAP model.

:class:`SpatialCLAP` is a SpeechBrain ``Pretrained`` interface over an exported model
folder (``hyperparams.yaml`` plus ``audio_encoder.ckpt``, ``text_tower.ckpt`` and
``temperature.ckpt``, as written by :func:`spatial_clap_sb.export.export_model`)::

    from spatial_clap_sb.inference import SpatialCLAP

    model = SpatialCLAP.from_hparams(source="results/spatial_clap/1234/model",
                                     savedir="pretrained_models/spatial_clap")
    audio = model.encode_files(["scene.wav"])              # [1, D], unit norm
    text = model.encode_text(["To the left a dog barks, while rain falls ahead."])  # [1, D]
    model.similarity(audio, text)                          # [1, 1] cosine similarity
    zones, probs = model.classify_direction(wavs)          # wavs: [batch, time, 2]

Stereo is never flattened: audio is ``[batch, time, 2]`` with channel 0 the left
channel, files are read with :func:`~spatial_clap_sb.data.audio_io.load_stereo` (never
``Pretrained.load_audio``, which downmixes to mono), and a mono input is an error unless
``allow_mono=True`` duplicates it into both channels with a warning (its direction is
then meaningless).

Long recordings (``encode_files``, ``encode_signals``)
-----------------------------------------------------
The model is trained on scenes of a fixed length (hparam ``chunk_seconds``, 2.0 s when
the model folder does not set it). A longer recording is cut into consecutive windows of
exactly that length, starting at 0, ``W``, ``2W``, ...; when the recording is not a
whole number of windows, the last window is the one that *ends at the last sample*
(it overlaps its predecessor), so every window is full of real audio, as in training,
and no zero padding is ever fed to the model. Each window is embedded, the window
embeddings are averaged with equal weights and the mean is L2-normalised again. A
recording no longer than one window is embedded whole, at its own length. The policy
is deterministic (no random crop): the same file gives the same embedding in every call
and every process, whatever else is in the batch (up to float rounding, ~1e-7).
``encode_files`` reads a file longer than ``STREAMED_WINDOWS`` windows (64 s at 2-s
windows) that many windows at a time, with the same windows, resampling and mean, so
a recording of hours embeds in the memory of about a minute of audio.
"""
import os
import warnings
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F
from speechbrain.inference.interfaces import Pretrained
from speechbrain.utils.fetching import fetch

from spatial_clap_sb.data.audio_io import load_stereo, read_stereo_span, stereo_length
from spatial_clap_sb.export import check_checkpoint_fits
from spatial_clap_sb.language import ZoneVocabulary, direction_prompts
from spatial_clap_sb.models.text import check_captions
from spatial_clap_sb.trust import check_model_folder, check_model_yaml

__all__ = ["SpatialCLAP", "window_starts", "DEFAULT_CHUNK_SECONDS"]

DEFAULT_CHUNK_SECONDS = 2.0
# The audio tower's precisions (from_hparams(audio_precision=...)): bf16 is autocast.
AUDIO_PRECISIONS = ("fp32", "bf16")
# encode_files reads a file longer than this many windows a part at a time (this many
# windows per read), so memory does not grow with the recording's length.
STREAMED_WINDOWS = 32
MONO_WARNING = ("Mono audio duplicated into both channels: the two channels are "
                "identical, so any direction read from it is meaningless.")


def _spare_cores():
    """True when this process may use more cores than torch's intra-op threads."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else (os.cpu_count() or 1)
    return cores > torch.get_num_threads()


def window_starts(n_samples, window):
    """Start samples of the analysis windows of a recording (see the module docstring).

    Arguments
    ---------
    n_samples : int
        Length of the recording in samples.
    window : int
        Window length in samples.

    Returns
    -------
    list of int
        ``[0]`` when the recording fits in one window (it is then embedded whole);
        otherwise ``0, W, 2W, ...`` plus ``n_samples - W`` when the windows do not end
        exactly at the last sample.

    Example
    -------
    >>> window_starts(5, 2)
    [0, 2, 3]
    >>> window_starts(4, 2)
    [0, 2]
    >>> window_starts(1, 2)
    [0]
    """
    if window <= 0:
        raise ValueError(f"window must be positive, got {window}")
    if n_samples <= window:
        return [0]
    starts = list(range(0, n_samples - window + 1, window))
    if starts[-1] + window < n_samples:
        starts.append(n_samples - window)
    return starts


def _check_untrusted_source(source, hparams_file, savedir):
    """Checks a model folder before SpeechBrain loads anything from it."""
    if os.path.isdir(os.fspath(source)):
        check_model_folder(os.fspath(source), hparams_file)
        return
    # A hub source: its YAML is fetched and checked here; its weights are loaded by
    # torch.load, whose default (weights_only=True) refuses pickled code.
    check_model_yaml(fetch(filename=hparams_file, source=source, savedir=savedir))


class SpatialCLAP(Pretrained):
    """Spatial-CLAP embeddings of stereo scenes and captions, zero-shot and retrieval.

    Load with :meth:`from_hparams` from an exported model folder. Every method runs
    without gradients with the modules in eval mode (BatchNorm uses its running
    statistics, so an item's embedding does not depend on the rest of its batch).

    Hyperparameters read from the model's ``hyperparams.yaml``: ``sample_rate``,
    ``zones`` (the zone vocabulary of :meth:`classify_direction`) and, optionally,
    ``chunk_seconds`` (window length of :meth:`encode_files`, default 2.0).

    Example
    -------
    >>> model = SpatialCLAP.from_hparams(source="results/spatial_clap/1234/model",
    ...                                  savedir="pretrained")  # doctest: +SKIP
    >>> audio = model.encode_files(["dog_left.wav", "car_right.wav"])  # doctest: +SKIP
    >>> text = model.encode_text(["a dog barks on the left"])  # doctest: +SKIP
    >>> model.similarity(audio, text).shape  # doctest: +SKIP
    torch.Size([2, 1])
    """

    HPARAMS_NEEDED = ["sample_rate", "zones"]
    MODULES_NEEDED = ["audio_encoder", "text_tower", "temperature"]

    @classmethod
    def from_hparams(cls, source, hparams_file="hyperparams.yaml",
                     trust_remote_code=False, **kwargs):
        """Loads a model folder (local, or fetched by SpeechBrain from a hub).

        Unless ``trust_remote_code=True``, the folder is checked first and refused
        (:class:`~spatial_clap_sb.trust.UntrustedModelError`) if its
        ``hyperparams.yaml`` builds or calls anything outside this package's models,
        ``torch.nn`` and SpeechBrain's ``Pretrainer``, or a ``.ckpt`` holds more than
        tensors (see :mod:`spatial_clap_sb.trust`).

        Arguments
        ---------
        source : str
            The model folder or hub id.
        hparams_file : str
            The YAML inside it.
        trust_remote_code : bool
            Load a folder that runs code of its own (only for folders you trust).
        **kwargs
            As SpeechBrain's ``Pretrained.from_hparams`` (``savedir``, ``run_opts``,
            ``overrides``, ...), plus ``audio_precision``: ``"fp32"`` (default) or
            ``"bf16"``, the audio tower run in bfloat16 autocast (on a CPU with
            AVX-512 BF16, 1.05 to 1.5 times faster in this project's measurements;
            embeddings within a cosine of about 1e-4 of fp32's; the text tower stays
            fp32).

        Returns
        -------
        SpatialCLAP
        """
        if not trust_remote_code:
            _check_untrusted_source(source, hparams_file, kwargs.get("savedir"))
        return super().from_hparams(source, hparams_file=hparams_file, **kwargs)

    def __init__(self, *args, audio_precision="fp32", **kwargs):
        if audio_precision not in AUDIO_PRECISIONS:
            raise ValueError(f"audio_precision must be one of {AUDIO_PRECISIONS}, got "
                             f"{audio_precision!r}.")
        super().__init__(*args, **kwargs)
        self.audio_precision = audio_precision
        missing = [name for name in self.MODULES_NEEDED
                   if name not in self.mods or self.mods[name] is None]
        if missing:
            raise ValueError(f"The model's hyperparams.yaml lacks the modules {missing} "
                             f"under 'modules' (needed: {self.MODULES_NEEDED}).")
        self.zones = ZoneVocabulary.from_config(self.hparams.zones)
        self.sample_rate = int(self.hparams.sample_rate)
        chunk_seconds = getattr(self.hparams, "chunk_seconds", None)
        self.chunk_seconds = float(DEFAULT_CHUNK_SECONDS if chunk_seconds is None
                                   else chunk_seconds)
        if self.chunk_seconds <= 0:
            raise ValueError(f"chunk_seconds must be positive, got {self.chunk_seconds}")
        self._check_checkpoints()

    def _check_checkpoints(self):
        """Fails when a checkpoint does not fit its module.

        SpeechBrain's Pretrainer loads non-strictly and only logs missing weights, which
        at inference would leave part of the model at its random initialisation.
        """
        paths = getattr(getattr(self.hparams, "pretrainer", None), "paths", None) or {}
        for name, path in paths.items():
            if name in self.mods:
                check_checkpoint_fits(self.mods[name], path, name,
                                      "built from hyperparams.yaml: was it exported with "
                                      "other hyperparameters?")

    # ------------------------------------------------------------------ properties

    @property
    def zone_names(self):
        """Names of the model's direction zones, left to right."""
        return self.zones.names

    @property
    def chunk_samples(self):
        """Window length of long recordings, in samples at the model's rate."""
        return max(1, int(round(self.chunk_seconds * self.sample_rate)))

    def logit_scale(self):
        """The learned logit scale (inverse temperature) as a Python float."""
        with torch.no_grad():
            return float(self.mods.temperature())

    def _eval(self):
        """Puts every module in eval mode (a caller may have called ``.train()``)."""
        self.mods.eval()

    # ------------------------------------------------------------------ audio

    def _as_stereo_batch(self, wavs, allow_mono):
        """Checks a ``[batch, time, 2]`` batch; handles mono input per ``allow_mono``."""
        if not torch.is_tensor(wavs):
            wavs = torch.as_tensor(np.asarray(wavs))
        if not wavs.is_floating_point():
            raise TypeError(f"Audio must be floating point, got {wavs.dtype}.")
        if wavs.dim() == 2 or (wavs.dim() == 3 and wavs.shape[-1] == 1):
            if not allow_mono:
                raise ValueError(
                    f"Got mono audio of shape {tuple(wavs.shape)}, but the model needs "
                    "two channels: [batch, time, 2] with channel 0 = left, channel 1 = "
                    "right. Pass allow_mono=True to duplicate a mono signal into both "
                    "channels (direction is then meaningless).")
            warnings.warn(MONO_WARNING, stacklevel=3)
            wavs = wavs.reshape(wavs.shape[0], wavs.shape[1], 1).expand(-1, -1, 2)
        elif wavs.dim() != 3:
            raise ValueError(
                f"Audio must be a batch [batch, time, 2] (channel 0 = left), got shape "
                f"{tuple(wavs.shape)}.")
        elif wavs.shape[-1] != 2:
            hint = (" It looks channels-first: transpose it to [batch, time, 2]."
                    if wavs.shape[1] == 2 else "")
            raise ValueError(
                f"Audio of shape {tuple(wavs.shape)} has {wavs.shape[-1]} channels, but "
                f"the model needs exactly two: [batch, time, 2] with channel 0 = left."
                f"{hint}")
        if wavs.shape[0] == 0 or wavs.shape[1] == 0:
            raise ValueError(f"Audio batch of shape {tuple(wavs.shape)} is empty.")
        return wavs.float()

    def encode_audio(self, wavs, wav_lens=None, allow_mono=False):
        """Embeds a batch of stereo waveforms at the model's sample rate.

        The batch is embedded as it is (no windowing): for recordings much longer than
        the training scenes use :meth:`encode_signals` or :meth:`encode_files`.

        Arguments
        ---------
        wavs : torch.Tensor
            ``[batch, time, 2]``, channel 0 left, at ``self.sample_rate``.
        wav_lens : torch.Tensor, optional
            ``[batch]`` relative lengths of padded items (SpeechBrain's convention).
        allow_mono : bool
            Accept mono ``[batch, time]`` or ``[batch, time, 1]`` input by duplicating
            it into both channels (with a warning: direction is then meaningless).

        Returns
        -------
        torch.Tensor
            ``[batch, embedding_dim]``, L2-normalised.

        Raises
        ------
        ValueError
            For mono input (unless ``allow_mono``), more than two channels, or a shape
            that is not a batch.

        Example
        -------
        >>> wavs = torch.randn(2, 32000, 2) * 0.1  # two 2 s stereo scenes
        >>> model.encode_audio(wavs).shape  # doctest: +SKIP
        torch.Size([2, 512])
        """
        wavs = self._as_stereo_batch(wavs, allow_mono).to(self.device)
        if wav_lens is not None:
            wav_lens = torch.as_tensor(wav_lens, dtype=torch.float32).to(self.device)
            if wav_lens.shape != (wavs.shape[0],):
                raise ValueError(f"wav_lens must have shape [{wavs.shape[0]}], got "
                                 f"{tuple(wav_lens.shape)}.")
        self._eval()
        with torch.no_grad(), torch.autocast(torch.device(self.device).type,
                                             dtype=torch.bfloat16,
                                             enabled=self.audio_precision == "bf16"):
            embeddings = self.mods.audio_encoder(wavs, wav_lens)
        return F.normalize(embeddings.float(), dim=-1)

    def forward(self, wavs, wav_lens=None):
        """Same as :meth:`encode_audio`."""
        return self.encode_audio(wavs, wav_lens)

    def load_audio(self, path, allow_mono=False):
        """Reads an audio file as stereo ``[time, 2]`` at the model's sample rate.

        Overrides ``Pretrained.load_audio``, which downmixes to mono. Any sample rate is
        resampled; errors name the file.

        Arguments
        ---------
        path : str
            Audio file.
        allow_mono : bool
            Duplicate a mono file into both channels (with a warning) instead of raising.

        Returns
        -------
        torch.Tensor
            ``[time, 2]`` float32, channel 0 left.
        """
        return torch.from_numpy(load_stereo(path, self.sample_rate, allow_mono=allow_mono))

    def encode_signals(self, signals, batch_size=16, allow_mono=False):
        """Embeds recordings of any lengths with the window policy of the module docs.

        Arguments
        ---------
        signals : list of torch.Tensor or numpy.ndarray
            Each ``[time, 2]`` (channel 0 left) at the model's sample rate.
        batch_size : int
            Windows embedded per forward pass. Only windows of equal length share a
            batch, so nothing is padded and the result does not depend on it.
        allow_mono : bool
            Accept ``[time]`` or ``[time, 1]`` signals, duplicated into both channels.

        Returns
        -------
        torch.Tensor
            ``[len(signals), embedding_dim]``, L2-normalised.

        Example
        -------
        >>> long = torch.randn(5 * 16000, 2) * 0.1  # 5 s: windows [0-2], [2-4], [3-5] s
        >>> model.encode_signals([long]).shape  # doctest: +SKIP
        torch.Size([1, 512])
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        signals = list(signals)
        if not signals:
            raise ValueError("encode_signals needs at least one signal.")
        window = self.chunk_samples
        windows = []  # (signal index, window tensor [time, 2])
        for i, signal in enumerate(signals):
            if not torch.is_tensor(signal):
                signal = torch.as_tensor(np.asarray(signal))
            if signal.dim() == 1:
                signal = signal[:, None]
            try:
                signal = self._as_stereo_batch(signal[None], allow_mono)[0]
            except ValueError as error:
                raise ValueError(f"Signal {i}: {error}") from None
            for start in window_starts(signal.shape[0], window):
                windows.append((i, signal[start:start + window]))

        by_length = defaultdict(list)
        for w, (_, chunk) in enumerate(windows):
            by_length[chunk.shape[0]].append(w)
        embeddings = [None] * len(windows)
        for length in sorted(by_length):
            members = by_length[length]
            for start in range(0, len(members), batch_size):
                batch_ids = members[start:start + batch_size]
                batch = torch.stack([windows[w][1] for w in batch_ids])
                for w, emb in zip(batch_ids, self.encode_audio(batch)):
                    embeddings[w] = emb

        out = []
        for i in range(len(signals)):
            mine = [embeddings[w] for w, (owner, _) in enumerate(windows) if owner == i]
            out.append(mine[0] if len(mine) == 1 else
                       F.normalize(torch.stack(mine).mean(dim=0), dim=-1))
        return torch.stack(out)

    def encode_files(self, paths, batch_size=16, allow_mono=False, progress=False):
        """Embeds audio files of any sample rate and length.

        Files are read with :func:`~spatial_clap_sb.data.audio_io.load_stereo`
        (resampled to the model's rate, never downmixed); long files follow the window
        policy of the module docstring.

        Arguments
        ---------
        paths : list of str
            Audio files (a single path is accepted too).
        batch_size : int
            Files loaded, and windows embedded, per step.
        allow_mono : bool
            Duplicate a mono file into both channels (with a warning) instead of raising.
        progress : bool
            Show a tqdm progress bar over the files.

        Returns
        -------
        torch.Tensor
            ``[len(paths), embedding_dim]``, L2-normalised, in the order of ``paths``.

        Raises
        ------
        FileNotFoundError
            A file does not exist (the message names it).
        spatial_clap_sb.data.audio_io.AudioReadError
            A file is corrupt, empty or not finite (the message names it).
        spatial_clap_sb.data.audio_io.ChannelCountError
            A file is not stereo (mono is allowed with ``allow_mono``).

        Example
        -------
        >>> model.encode_files(["scene_44k.wav", "long_recording.flac"]).shape
        ...  # doctest: +SKIP
        torch.Size([2, 512])
        """
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        paths = [os.fspath(p) for p in paths]
        if not paths:
            raise ValueError("encode_files needs at least one path.")
        groups = [paths[i:i + batch_size] for i in range(0, len(paths), batch_size)]
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(paths), desc="Embedding", unit="file")
        out = []
        try:
            for group, lengths, signals in self._groups_read(groups, allow_mono):
                out.append(self._encode_group(group, lengths, signals, batch_size,
                                              allow_mono))
                if bar is not None:
                    bar.update(len(group))
        finally:
            if bar is not None:
                bar.close()
        return torch.cat(out)

    def _groups_read(self, groups, allow_mono):
        """Yields each group of files with what :meth:`_read_group` read of it.

        Where the machine has cores that torch's threads leave idle, the next group is
        read and resampled in a thread while the model embeds this one. Where torch
        already uses every core, a reader thread only competes with it (measured on 2
        cores: slower than reading in turn), so the groups are read in turn.
        """
        if not _spare_cores():
            for group in groups:
                yield (group, *self._read_group(group, allow_mono))
            return
        with ThreadPoolExecutor(max_workers=1) as reader:
            pending = reader.submit(self._read_group, groups[0], allow_mono)
            for index, group in enumerate(groups):
                lengths, signals = pending.result()
                if index + 1 < len(groups):
                    pending = reader.submit(self._read_group, groups[index + 1],
                                            allow_mono)
                yield group, lengths, signals

    def _read_group(self, group, allow_mono):
        """Lengths of a group of files, and the signals of those short enough to read
        whole (longer ones are streamed by :meth:`_encode_streamed`)."""
        lengths = [stereo_length(p, self.sample_rate, allow_mono) for p in group]
        signals = {p: torch.from_numpy(load_stereo(p, self.sample_rate,
                                                   allow_mono=allow_mono))
                   for p, n in zip(group, lengths)
                   if n <= STREAMED_WINDOWS * self.chunk_samples}
        return lengths, signals

    def _encode_group(self, group, lengths, signals, batch_size, allow_mono):
        """Embeddings ``[len(group), dim]`` of a group of files read by :meth:`_read_group`."""
        short = list(signals)
        embedded = dict(zip(short, self.encode_signals([signals[p] for p in short],
                                                       batch_size) if short else []))
        for p, n in zip(group, lengths):
            if p not in embedded:
                embedded[p] = self._encode_streamed(p, n, batch_size, allow_mono)
        return torch.stack([embedded[p] for p in group])

    def _encode_streamed(self, path, n_samples, batch_size, allow_mono):
        """A long file's embedding, read ``STREAMED_WINDOWS`` windows at a time: the
        same windows and mean as :meth:`encode_signals`, in memory of one read."""
        window = self.chunk_samples
        starts = window_starts(n_samples, window)
        total = None
        for first in range(0, len(starts), STREAMED_WINDOWS):
            group = starts[first:first + STREAMED_WINDOWS]
            span = torch.from_numpy(read_stereo_span(
                path, self.sample_rate, group[0], group[-1] + window, allow_mono))
            for i in range(0, len(group), batch_size):
                batch = torch.stack([span[s - group[0]: s - group[0] + window]
                                     for s in group[i:i + batch_size]])
                part = self.encode_audio(batch).sum(dim=0)
                total = part if total is None else total + part
        return F.normalize(total / len(starts), dim=-1)

    # ------------------------------------------------------------------ text

    def encode_text(self, captions, batch_size=256):
        """Embeds captions into the joint space.

        Arguments
        ---------
        captions : list of str
            Non-empty captions.
        batch_size : int
            Captions per forward pass.

        Returns
        -------
        torch.Tensor
            ``[len(captions), embedding_dim]``, L2-normalised.

        Raises
        ------
        ValueError
            For an empty or non-string caption (the message gives its index).
        TypeError
            For a single string instead of a list.

        Example
        -------
        >>> model.encode_text(["a dog barks on the left"]).shape  # doctest: +SKIP
        torch.Size([1, 512])
        """
        captions = captions if isinstance(captions, str) else list(captions)
        check_captions(captions)
        if not captions:
            raise ValueError("encode_text needs at least one caption.")
        self._eval()
        chunks = []
        with torch.no_grad():
            for start in range(0, len(captions), batch_size):
                emb = self.mods.text_tower(captions[start:start + batch_size])
                chunks.append(F.normalize(emb.float(), dim=-1))
        return torch.cat(chunks)

    # ------------------------------------------------------------------ scoring

    @staticmethod
    def similarity(audio_emb, text_emb):
        """Cosine similarity of every audio embedding with every text embedding.

        Arguments
        ---------
        audio_emb : torch.Tensor or numpy.ndarray
            ``[n_audio, D]`` (or ``[D]``).
        text_emb : torch.Tensor or numpy.ndarray
            ``[n_text, D]`` (or ``[D]``).

        Returns
        -------
        torch.Tensor
            ``[n_audio, n_text]`` cosine similarities in [-1, 1].

        Example
        -------
        >>> SpatialCLAP.similarity(torch.eye(2), torch.tensor([[1.0, 1.0]]))
        tensor([[0.7071],
                [0.7071]])
        """
        audio = _as_matrix(audio_emb, "audio_emb")
        text = _as_matrix(text_emb, "text_emb").to(audio.device)
        if audio.shape[1] != text.shape[1]:
            raise ValueError(f"Embedding sizes differ: audio {audio.shape[1]}, "
                             f"text {text.shape[1]}.")
        return F.normalize(audio, dim=-1) @ F.normalize(text, dim=-1).T

    def _probabilities(self, audio_emb, prompt_emb):
        """Softmax over prompts of ``logit_scale * cosine similarity``."""
        with torch.no_grad():
            logits = self.mods.temperature().float() * self.similarity(audio_emb,
                                                                       prompt_emb)
        return torch.softmax(logits, dim=-1)

    def classify_direction(self, wavs, wav_lens=None, allow_mono=False):
        """Zero-shot direction of the (single) source of each scene.

        The audio embeddings are compared with the direction prompts of the model's zone
        vocabulary (``"a sound on the left"``, ... from
        :func:`~spatial_clap_sb.language.direction_prompts`); the probabilities are
        the softmax of ``logit_scale * cosine similarity`` over the zones.

        Arguments
        ---------
        wavs : torch.Tensor
            ``[batch, time, 2]``, channel 0 left.
        wav_lens : torch.Tensor, optional
            ``[batch]`` relative lengths.
        allow_mono : bool
            See :meth:`encode_audio` (the answer is then meaningless).

        Returns
        -------
        zones : list of str
            The most probable zone name of each scene.
        probabilities : torch.Tensor
            ``[batch, n_zones]``, rows sum to 1, columns in ``self.zone_names`` order.

        Example
        -------
        >>> zones, probs = model.classify_direction(wavs)  # doctest: +SKIP
        >>> zones  # doctest: +SKIP
        ['left', 'front-right']
        """
        audio = self.encode_audio(wavs, wav_lens, allow_mono=allow_mono)
        probs = self._probabilities(audio, self.encode_text(direction_prompts(self.zones)))
        names = self.zone_names
        return [names[i] for i in probs.argmax(dim=-1).tolist()], probs

    def zero_shot(self, wavs, class_names, template="This is a sound of {}.",
                  wav_lens=None, allow_mono=False):
        """Zero-shot classification of each scene among ``class_names``.

        Arguments
        ---------
        wavs : torch.Tensor
            ``[batch, time, 2]``, channel 0 left.
        class_names : list of str
            Candidate classes; each fills the ``{}`` of ``template``.
        template : str
            Prompt template with one ``{}`` (LAION-CLAP's default).
        wav_lens : torch.Tensor, optional
            ``[batch]`` relative lengths.
        allow_mono : bool
            See :meth:`encode_audio`.

        Returns
        -------
        predictions : list of str
            The most probable class of each scene.
        probabilities : torch.Tensor
            ``[batch, n_classes]``, rows sum to 1.

        Example
        -------
        >>> model.zero_shot(wavs, ["dog", "car"])[0]  # doctest: +SKIP
        ['dog', 'car']
        """
        if isinstance(class_names, str):
            raise TypeError("class_names must be a list of class names, not one string.")
        class_names = list(class_names)
        if not class_names:
            raise ValueError("zero_shot needs at least one class name.")
        if "{}" not in template:
            raise ValueError(f"The template {template!r} needs a '{{}}' for the class name.")
        check_captions(class_names)
        audio = self.encode_audio(wavs, wav_lens, allow_mono=allow_mono)
        prompts = [template.format(name) for name in class_names]
        probs = self._probabilities(audio, self.encode_text(prompts))
        return [class_names[i] for i in probs.argmax(dim=-1).tolist()], probs

    def retrieve(self, text, audio_embs, k=5):
        """The ``k`` audio embeddings that best match a text query.

        Arguments
        ---------
        text : str
            The query, e.g. ``"a dog barks off to the left while a bell rings ahead"``.
        audio_embs : torch.Tensor or numpy.ndarray
            ``[n_audio, D]`` embeddings (from :meth:`encode_files`, say).
        k : int
            How many to return (all of them when there are fewer).

        Returns
        -------
        list of (int, float)
            ``(index into audio_embs, cosine similarity)``, best first; equal scores
            keep the lower index first.

        Example
        -------
        >>> audio = model.encode_files(paths)  # doctest: +SKIP
        >>> model.retrieve("a dog barks on the left", audio, k=3)  # doctest: +SKIP
        [(4, 0.61), (0, 0.42), (7, 0.40)]
        """
        if not isinstance(text, str):
            raise TypeError("retrieve takes one text query (a string).")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        audio = _as_matrix(audio_embs, "audio_embs")
        scores = self.similarity(audio, self.encode_text([text]))[:, 0]
        scores = scores.double().cpu().numpy()
        order = np.argsort(-scores, kind="stable")[:int(k)]
        return [(int(i), float(scores[i])) for i in order]


def _as_matrix(x, name):
    """A float ``[N, D]`` tensor from a tensor or array (``[D]`` becomes ``[1, D]``)."""
    x = x.detach() if torch.is_tensor(x) else torch.as_tensor(np.asarray(x))
    if x.dim() == 1:
        x = x[None]
    if x.dim() != 2:
        raise ValueError(f"{name} must be [N, D], got shape {tuple(x.shape)}.")
    return x.float()
