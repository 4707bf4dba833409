"""Checks of a user's data before anything is rendered or trained.

One pass reads every file a run will use and lists every problem at once (file and
reason), so that a bad clip is found before the first scene is rendered, not an hour
into training. The same checks serve the prepare step (mono source clips, see
:func:`spatial_clap_sb.data.prepare.prepare_spatial_scenes`) and ``spatial-clap
manifest`` (stereo recordings, see :mod:`spatial_clap_sb.data.recordings`).

What is checked:

* audio: readable by soundfile, not truncated (a WAV file shorter than its header
  says, which soundfile reads without a word), not empty, at least ``min_seconds``
  long, a sample rate no lower than the model's (upsampling cannot restore the
  missing band), only finite samples, not silent, and two channels where stereo is
  required;
* captions: not empty;
* manifests (a user's own, see :func:`manifest_problems`): unique ids, a caption per
  entry, text that SpeechBrain's ``{data_root}`` substitution leaves intact, and the
  audio checks above for every ``wav``;
* splits: every split holds enough clips with distinct labels for the scenes drawn
  from it (an n-source scene needs n of them).

A run either stops with one :class:`DataCheckError` listing every problem (the
default) or, with ``on_bad="skip"``, leaves the listed files out and says so.
"""
import json
import logging
import os
import struct
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from spatial_clap_sb.data.audio_io import read_float32
from spatial_clap_sb.files import atomic_write_json

logger = logging.getLogger(__name__)

ON_BAD_CHOICES = ("stop", "skip")
# A peak below this (-100 dBFS) counts as silence.
SILENCE_PEAK = 1e-5
# Problems listed in an error message; the rest are counted.
MAX_LISTED = 50


class DataCheckError(ValueError):
    """The data of a run has problems; the message lists each file and reason."""


@dataclass(frozen=True)
class Problem:
    """One bad file or row: where it is and what is wrong with it."""

    where: str
    reason: str

    def __str__(self):
        return f"{self.where}: {self.reason}"


def audio_problem(path, sample_rate, stereo=False, min_seconds=0.1):
    """What is wrong with an audio file, or None when it is usable.

    Arguments
    ---------
    path : str
        The audio file.
    sample_rate : int
        The model's sample rate; a file recorded at a lower rate is refused.
    stereo : bool
        Require two channels (channel 0 left). Otherwise any channel count is accepted
        (mono clips are made by averaging the channels).
    min_seconds : float
        Shortest usable length.

    Returns
    -------
    str or None
        The reason, in words a user can act on.

    Example
    -------
    >>> import tempfile
    >>> from spatial_clap_sb.data.audio_io import write_audio
    >>> path = os.path.join(tempfile.mkdtemp(), "mono.wav")
    >>> write_audio(path, np.full(16000, 0.1, dtype=np.float32), 16000)
    >>> audio_problem(path, 16000) is None
    True
    >>> audio_problem(path, 16000, stereo=True)
    '1 channel(s); a stereo recording is needed (2 channels, channel 0 = left)'
    """
    if not os.path.isfile(path):
        return "file not found"
    try:
        with sf.SoundFile(path) as info:  # its header fields outlive the close
            data = read_float32(info)
    except Exception as err:  # soundfile raises several types (LibsndfileError, ...)
        return f"not a readable audio file (soundfile: {err})"
    truncated = _wav_truncation(path, info)
    if truncated:
        return truncated
    if stereo and info.channels != 2:
        return (f"{info.channels} channel(s); a stereo recording is needed "
                "(2 channels, channel 0 = left)")
    if info.samplerate < sample_rate:
        return (f"sample rate {info.samplerate} Hz is below the model's {sample_rate} Hz "
                "(resampling up cannot restore the missing high frequencies)")
    seconds = data.shape[0] / info.samplerate
    if seconds < min_seconds:
        return f"{seconds:.3f} s long; at least {min_seconds} s is needed"
    finite = np.isfinite(data)
    if not finite.all():
        return f"{int(data.size - finite.sum())} non-finite samples (NaN or inf)"
    if float(np.abs(data).max()) < SILENCE_PEAK:
        return "silent (no sample above -100 dBFS)"
    return None


def _wav_truncation(path, info):
    """For a WAV file whose data chunk is shorter than its header says, the reason."""
    if info.format != "WAV":
        return None
    with open(path, "rb") as f:
        header = f.read(12)
        if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
            return None
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            name, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if name == b"data":
                available = os.path.getsize(path) - f.tell()
                if size != 0xFFFFFFFF and size > available:  # 0xFFFFFFFF: streamed
                    return (f"truncated: its header announces {size} bytes of audio, "
                            f"the file holds {available} (an interrupted copy?)")
                return None
            f.seek(size + size % 2, os.SEEK_CUR)


def caption_problem(caption):
    """What is wrong with a caption, or None.

    Example
    -------
    >>> caption_problem("  ")
    'empty caption'
    >>> caption_problem("a dog barks") is None
    True
    """
    if not isinstance(caption, str) or not caption.strip():
        return "empty caption"
    return None


def clip_problems(clips, sample_rate, min_seconds=0.1):
    """Problems of mono source clips (audio and captions), one per bad clip.

    Arguments
    ---------
    clips : list of SourceClip
    sample_rate : int
    min_seconds : float

    Returns
    -------
    list of Problem
        ``where`` is the clip's file.
    """
    problems = []
    for clip in clips:
        reason = next((r for r in map(caption_problem, clip.captions) if r), None)
        reason = reason or audio_problem(clip.path, sample_rate, min_seconds=min_seconds)
        if reason:
            problems.append(Problem(clip.path, reason))
    return problems


def enforce(problems, on_bad, source, fix):
    """Stops on problems (``on_bad="stop"``) or logs the files left out (``"skip"``).

    Arguments
    ---------
    problems : list of Problem
    on_bad : str
        ``"stop"`` or ``"skip"``.
    source : str
        What was checked (a CSV, a folder), named in the message.
    fix : str
        What the user can do, appended to the message.

    Returns
    -------
    set of str
        The ``where`` of every problem (the files to leave out when skipping).

    Raises
    ------
    DataCheckError
        With ``on_bad="stop"`` and at least one problem: lists every problem.

    Example
    -------
    >>> enforce([Problem("a.wav", "silent")], "skip", "clips.csv", "")
    {'a.wav'}
    """
    if on_bad not in ON_BAD_CHOICES:
        raise ValueError(f"on_bad must be one of {ON_BAD_CHOICES}, got {on_bad!r}.")
    if not problems:
        return set()
    listing = describe(problems)
    if on_bad == "stop":
        raise DataCheckError(
            f"{source}: {len(problems)} bad file(s) or row(s), found before any "
            f"scene was rendered or any step trained:\n{listing}\n{fix}")
    logger.warning("%s: leaving out %d bad file(s) or row(s):\n%s", source,
                   len(problems), listing)
    return {p.where for p in problems}


def describe(problems):
    """One line per problem (the first ``MAX_LISTED``, then a count)."""
    lines = [f"  {p}" for p in problems[:MAX_LISTED]]
    if len(problems) > MAX_LISTED:
        lines.append(f"  ... and {len(problems) - MAX_LISTED} more")
    return "\n".join(lines)


def manifest_problems(manifest_path, data_root, sample_rate, min_seconds=0.1):
    """Problems of a user's SpeechBrain manifest of stereo scenes, one per bad entry.

    Arguments
    ---------
    manifest_path : str
        The JSON manifest (``{id: {"wav": ..., "caption": ..., ...}}``).
    data_root : str
        Replaces ``{data_root}`` in the ``wav`` paths.
    sample_rate : int
        The model's sample rate.
    min_seconds : float
        Shortest usable scene.

    Returns
    -------
    list of Problem
        ``where`` is ``"<manifest>: <id>"``.
    """
    problems, seen = [], set()
    with open(manifest_path, encoding="utf-8") as f:
        pairs = json.load(f, object_pairs_hook=lambda items: items)
    for entry_id, entry in pairs:
        where = f"{manifest_path}: {entry_id}"
        entry = dict(entry) if isinstance(entry, list) else entry
        if entry_id in seen:
            problems.append(Problem(where, "duplicate id (JSON keeps only the last)"))
            continue
        seen.add(entry_id)
        reason = (_format_problem(entry, data_root)
                  or caption_problem(entry.get("caption"))
                  or _manifest_audio_problem(entry, data_root, sample_rate, min_seconds))
        if reason:
            problems.append(Problem(where, reason))
    return problems


def checked_manifests(manifests, data_root, sample_rate, on_bad, folder):
    """Checks a user's manifests before training; stops, or writes copies without the
    bad entries.

    Arguments
    ---------
    manifests : dict
        Name -> manifest path.
    data_root : str
        Replaces ``{data_root}`` in the ``wav`` paths.
    sample_rate : int
        The model's sample rate.
    on_bad : str
        ``"stop"`` or ``"skip"``.
    folder : str
        Where copies without the bad entries go (only written when some are skipped).

    Returns
    -------
    dict
        Name -> the manifest to use (the user's own where it had no problem).

    Raises
    ------
    DataCheckError
        With ``on_bad="stop"``, listing every bad entry of every manifest.
    """
    problems = {name: manifest_problems(path, data_root, sample_rate)
                for name, path in manifests.items()}
    everything = [p for found in problems.values() for p in found]
    enforce(everything, on_bad, ", ".join(manifests.values()),
            "Fix or remove these entries, or rerun with --on_bad_data=skip to leave "
            "them out.")
    checked = dict(manifests)
    for name, found in problems.items():
        if found:
            bad_ids = {p.where.split(": ", 1)[1] for p in found}
            checked[name] = os.path.join(folder, f"{name}.json")
            _write_without(manifests[name], bad_ids, checked[name])
    return checked


def _write_without(source, bad_ids, target):
    """Copies a manifest without some entries (their text left as the user wrote it)."""
    with open(source, encoding="utf-8") as f:
        entries = json.load(f)
    atomic_write_json(target, {key: entry for key, entry in entries.items()
                               if key not in bad_ids})


def _format_problem(entry, data_root):
    """SpeechBrain formats every string of a manifest with ``{data_root}``."""
    for text in _strings(entry):
        try:
            text.format_map({"data_root": data_root})
        except (KeyError, IndexError, ValueError):
            return (f"{text!r} holds {{ or }}, which SpeechBrain's {{data_root}} "
                    "substitution reads as a field: write {{ and }} (spatial-clap "
                    "manifest does)")
    return None


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)


def _manifest_audio_problem(entry, data_root, sample_rate, min_seconds):
    wav = entry.get("wav")
    if not isinstance(wav, str) or not wav:
        return "no 'wav' path"
    path = wav.format_map({"data_root": data_root})
    reason = audio_problem(path, sample_rate, stereo=True, min_seconds=min_seconds)
    return f"{path}: {reason}" if reason else None


def distinct_labels(clips):
    """How many clips with distinct labels a scene can draw (unlabelled: each clip).

    Example
    -------
    >>> from spatial_clap_sb.data.sources import SourceClip
    >>> distinct_labels([SourceClip("a", "/a.wav", ("x",), "dog"),
    ...                  SourceClip("b", "/b.wav", ("y",), "dog"),
    ...                  SourceClip("c", "/c.wav", ("z",))])
    2
    """
    return len({c.label if c.label is not None else ("clip", c.clip_id) for c in clips})


def check_split_capacity(splits, sources_needed, source, fix):
    """Refuses splits that cannot fill the scenes drawn from them.

    Arguments
    ---------
    splits : dict
        Split name -> list of SourceClip.
    sources_needed : dict
        Split name -> the largest number of sources of a scene drawn from it.
    source : str
        Where the clips came from (named in the message).
    fix : str
        What the user can do, appended to the message.

    Raises
    ------
    DataCheckError
        Naming every split that falls short, what it has and what it needs.

    Example
    -------
    >>> from spatial_clap_sb.data.sources import SourceClip
    >>> splits = {"train": [SourceClip("a", "/a.wav", ("x",))], "test": []}
    >>> check_split_capacity(splits, {"train": 1}, "clips.csv", "")
    """
    short = []
    for split, needed in sources_needed.items():
        have = distinct_labels(splits.get(split, []))
        if have < needed:
            short.append(f"  {split}: {len(splits.get(split, []))} clips with {have} "
                         f"distinct label(s), but its scenes have up to {needed} "
                         f"sources, each of another label")
    if short:
        raise DataCheckError(f"{source} cannot fill the requested scenes:\n"
                             + "\n".join(short) + f"\n{fix}")


def split_summary(splits):
    """One line per split: clips and distinct labels (for the log)."""
    return "; ".join(f"{name}: {len(clips)} clips, {distinct_labels(clips)} labels"
                     for name, clips in splits.items())
