"""SpeechBrain data pipelines over scene manifests.

A manifest entry (see :mod:`spatial_clap_sb.data.prepare`) becomes a batch item with:

- ``sig``: stereo waveform ``[time, 2]`` (resampled to the model's rate, never downmixed)
- ``caption``: the scene caption (a random one of its captions in training, the first
  otherwise)
- ``permuted``: that caption's permuted-assignment captions (SCL negatives), from the
  entry's ``permuted_captions``; none for a caption without them (a user's own)
- ``captions``: every caption of the scene (several captions per clip, for retrieval
  metrics and the text-consistency objective)
- ``language``: the language split of the captions (``template``, ``train``,
  ``heldout``), which picks the direction prompts of the metrics
- ``zone_index``: the zone of a one-source scene, -1 for several sources
- ``n_sources`` and ``sources`` (per source: caption, label, zone, ...)
- ``content_frames``: with a :class:`~spatial_clap_sb.data.content_features.
  ContentFeatureCache`, the cached frames of a frozen pretrained content encoder

Stored scenes come from a manifest (:func:`scene_dataset`); training scenes can also be
mixed on the fly (:func:`dynamic_scene_dataset`), with captions drawn from the training
language; their items hold the drawn ``scene``, and the loader's collate function
(:class:`MixedSceneCollate`) renders a whole batch of them into ``sig`` at once. User
recordings enter here too: any manifest with ``wav``, ``caption`` and, for
the spatial metrics, ``sources`` with ``caption`` and ``zone``.
"""
import zlib

import numpy as np
import speechbrain as sb
import torch
from speechbrain.dataio.batch import PaddedBatch

from spatial_clap_sb.data.audio_io import load_stereo
from spatial_clap_sb.files import atomic_write_json
from spatial_clap_sb.language import (
    N_PHRASINGS,
    ZoneVocabulary,
    compose_caption,
    permuted_captions,
)

OUTPUT_KEYS = ["id", "sig", "caption", "permuted", "captions", "language", "zone_index",
               "n_sources", "sources"]


def scene_dataset(manifest_path, data_root, sample_rate, zones=None, train=False,
                  seed=0, epoch_counter=None, content_cache=None):
    """Builds a ``DynamicItemDataset`` of the scenes of a manifest.

    Arguments
    ---------
    manifest_path : str
        SpeechBrain JSON manifest.
    data_root : str
        Replaces ``{data_root}`` in the ``wav`` paths.
    sample_rate : int
        The model's sample rate; files at another rate are resampled.
    zones : ZoneVocabulary or list of dict, optional
        The zone vocabulary of the sources.
    train : bool
        Draw a random one of each scene's captions per example (text augmentation).
    seed : int
        With ``epoch_counter``, seeds the caption drawn in training.
    epoch_counter : speechbrain.utils.epoch_loop.EpochCounter, optional
        Its ``current`` epoch seeds the draws (see :func:`dynamic_scene_dataset`).
    content_cache : ContentFeatureCache, optional
        Adds ``content_frames``, the frozen content encoder's frames of each file.

    Returns
    -------
    speechbrain.dataio.dataset.DynamicItemDataset
    """
    data = sb.dataio.dataio.load_data_json(manifest_path,
                                           replacements={"data_root": data_root})
    zones = ZoneVocabulary.from_config(zones)
    for entry_id, entry in data.items():
        _complete_entry(manifest_path, entry_id, entry, zones)
    # Built after completing the entries: the dataset takes its static keys from the
    # first entry, and a key missing there would be unknown to the pipeline.
    dataset = sb.dataio.dataset.DynamicItemDataset(data)

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav):
        return torch.from_numpy(load_stereo(wav, sample_rate))

    dataset.add_dynamic_item(audio_pipeline)
    dataset = _add_scene_pipelines(dataset, zones, train, seed, epoch_counter)
    if content_cache is not None:
        dataset.add_dynamic_item(content_cache.frames, takes="wav",
                                 provides="content_frames")
        dataset.set_output_keys(OUTPUT_KEYS + ["content_frames"])
    return dataset


def dynamic_scene_dataset(mixer, scene_counts, seed=0, zones=None,
                          n_captions=N_PHRASINGS, epoch_counter=None):
    """Training scenes mixed on the fly: every epoch hears new mixtures and new captions.

    Each item draws a new scene (clips, room, zones, levels, captions in the training
    language) from the mixer, seeded by ``seed``, the epoch (``epoch_counter.current``)
    and the item's index only: runs with the same seed hear the same scenes, no two
    epochs do, and a run resumed in the middle of an epoch hears what it would have
    heard (no global random state is used, whatever the loader workers). Costs two
    convolutions per source.

    An item holds the drawn ``scene``, not its audio: the loader's collate function,
    the dataset's ``collate_fn`` (a :class:`MixedSceneCollate`), renders a whole
    batch at once and adds ``sig``. :class:`~spatial_clap_sb.brain.SpatialCLAPBrain`
    uses it by itself; give it to any other loader:
    ``make_dataloader(dataset, collate_fn=dataset.collate_fn)``.

    Arguments
    ---------
    mixer : SceneMixer
        Over the train clips and the train RIR bank.
    scene_counts : dict
        ``{n_sources: count}`` scenes per epoch.
    seed : int
    zones : ZoneVocabulary or list of dict, optional
    n_captions : int
        Captions drawn per scene.
    epoch_counter : speechbrain.utils.epoch_loop.EpochCounter, optional
        The run's epoch counter (without one, every epoch draws as epoch 0).

    Returns
    -------
    speechbrain.dataio.dataset.DynamicItemDataset
        With the output keys of :func:`scene_dataset` but ``scene`` for ``sig``, and
        the attribute ``collate_fn``.
    """
    data, index = {}, 0
    for n_sources, count in sorted(scene_counts.items()):
        for _ in range(int(count)):
            data[f"mix_{index:06d}"] = {"index": index, "n_sources": int(n_sources),
                                        "language": "train"}
            index += 1
    dataset = sb.dataio.dataset.DynamicItemDataset(data)

    @sb.utils.data_pipeline.takes("index", "n_sources")
    @sb.utils.data_pipeline.provides("scene", "captions", "permuted_captions", "sources")
    def mixing_pipeline(index, n_sources):
        rng = np.random.default_rng([seed, _epoch(epoch_counter), index])
        scene = mixer.draw(rng, n_sources, "train", n_captions)
        yield scene
        yield scene["captions"]
        yield scene["permuted_captions"]
        yield scene["sources"]

    dataset.add_dynamic_item(mixing_pipeline)
    dataset = _add_scene_pipelines(dataset, zones, True, seed, epoch_counter)
    dataset.set_output_keys(["scene" if key == "sig" else key for key in OUTPUT_KEYS])
    dataset.collate_fn = MixedSceneCollate(mixer)
    return dataset


class MixedSceneCollate:
    """Collates items of :func:`dynamic_scene_dataset`: renders the batch's drawn
    scenes in one pass (:meth:`SceneMixer.render_batch`) into ``sig`` and pads the
    rest with SpeechBrain's ``PaddedBatch``.

    Arguments
    ---------
    mixer : SceneMixer
        The mixer the scenes were drawn from.
    """

    def __init__(self, mixer):
        self.mixer = mixer

    def __call__(self, examples):
        """A list of item dicts -> ``PaddedBatch`` with ``sig`` and without ``scene``."""
        audio = self.mixer.render_batch([example["scene"] for example in examples])
        examples = [{**{k: v for k, v in example.items() if k != "scene"},
                     "sig": torch.from_numpy(signal)}
                    for example, signal in zip(examples, audio)]
        return PaddedBatch(examples)


def _epoch(epoch_counter):
    return 0 if epoch_counter is None else int(epoch_counter.current)


def _add_scene_pipelines(dataset, zones, train, seed=0, epoch_counter=None):
    """Caption, hard-negative and zone items shared by stored and mixed scenes."""
    zones = ZoneVocabulary.from_config(zones)

    @sb.utils.data_pipeline.takes("id", "captions", "permuted_captions")
    @sb.utils.data_pipeline.provides("caption", "permuted")
    def text_pipeline(item_id, captions, permuted_captions):
        choice = 0
        if train:  # seeded by the item, not a global generator (exact resumption)
            key = [seed, _epoch(epoch_counter), zlib.crc32(item_id.encode("utf-8")), 1]
            choice = int(np.random.default_rng(key).integers(len(captions)))
        yield captions[choice]
        yield list(permuted_captions[choice])

    @sb.utils.data_pipeline.takes("sources")
    @sb.utils.data_pipeline.provides("zone_index", "n_sources")
    def source_pipeline(sources):
        yield zones.index(sources[0]["zone"]) if len(sources) == 1 else -1
        yield len(sources)

    dataset.add_dynamic_item(text_pipeline)
    dataset.add_dynamic_item(source_pipeline)
    dataset.set_output_keys(OUTPUT_KEYS)
    return dataset


def write_manifest(path, entries):
    """Writes a SpeechBrain JSON manifest atomically (temporary file, then a rename).

    Every text value but ``wav`` is written with ``{`` and ``}`` doubled, so that
    SpeechBrain's ``{data_root}`` substitution, which formats every string it loads,
    gives back a caption such as "a {muffled} thump" as written.

    Arguments
    ---------
    path : str
        The JSON file.
    entries : dict
        Entry id -> entry (``wav`` may hold ``{data_root}``).

    Example
    -------
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "m.json")
    >>> write_manifest(path, {"a": {"wav": "{data_root}/a.wav", "caption": "a {x}"}})
    >>> data = sb.dataio.dataio.load_data_json(path, replacements={"data_root": "/d"})
    >>> data["a"]["wav"], data["a"]["caption"]
    ('/d/a.wav', 'a {x}')
    """
    escaped = {entry_id: {key: value if key == "wav" else _escape_braces(value)
                          for key, value in entry.items()}
               for entry_id, entry in entries.items()}
    atomic_write_json(path, escaped)


def _escape_braces(value):
    if isinstance(value, str):
        return value.replace("{", "{{").replace("}", "}}")
    if isinstance(value, list):
        return [_escape_braces(v) for v in value]
    if isinstance(value, dict):
        return {k: _escape_braces(v) for k, v in value.items()}
    return value


def _complete_entry(manifest_path, entry_id, entry, zones):
    """Fills the optional keys of a user manifest and rejects empty captions.

    The static ``caption`` is moved into ``captions``: SpeechBrain returns a static key
    in place of a dynamic item of the same name, which would hide the caption drawn by
    the text pipeline. Without ``permuted_captions``, a caption that is a template
    phrasing of the entry's ``sources`` gets that phrasing's permuted captions, and any
    other caption (a free-form one has no well-defined permutation) none.
    """
    caption = entry.pop("caption", None)
    if not isinstance(caption, str) or not caption.strip():
        raise ValueError(f"{manifest_path}: entry {entry_id!r} has no caption; every "
                         "scene needs a non-empty 'caption'.")
    entry.setdefault("captions", [caption])
    entry.setdefault("sources", [])
    entry.setdefault("language", "template")
    if "permuted_captions" not in entry:
        entry["permuted_captions"] = [_template_negatives(c, entry["sources"], zones)
                                      for c in entry["captions"]]
    if len(entry["permuted_captions"]) != len(entry["captions"]):
        raise ValueError(f"{manifest_path}: entry {entry_id!r} has "
                         f"{len(entry['captions'])} captions but "
                         f"{len(entry['permuted_captions'])} lists of permuted_captions; "
                         "give one list per caption.")


def _template_negatives(caption, sources, zones):
    """Permuted captions of a template caption of ``sources``; none for other text."""
    for phrasing in range(N_PHRASINGS) if sources else ():
        if caption == compose_caption(sources, phrasing, zones):
            return permuted_captions(sources, phrasing, zones)
    return []
