"""SpeechBrain data pipelines over scene manifests.

A manifest entry (see :mod:`spatial_clap_sb.data.prepare`) becomes a batch item with:

- ``sig``: stereo waveform ``[time, 2]`` (resampled to the model's rate, never downmixed)
- ``caption``: the scene caption (a random phrasing in training, phrasing 0 otherwise)
- ``permuted``: the permuted-assignment captions in the same phrasing (SCL negatives)
- ``captions``: every phrasing (several captions per clip, for retrieval metrics)
- ``zone_index``: the zone of a one-source scene, -1 for several sources
- ``n_sources``

User recordings enter here too: any manifest with ``wav``, ``caption`` and, for the
spatial metrics, ``sources`` with ``caption`` and ``zone``.
"""
import random

import speechbrain as sb
import torch

from spatial_clap_sb.data.audio_io import load_stereo
from spatial_clap_sb.data.captions import (
    N_PHRASINGS,
    ZoneVocabulary,
    compose_caption,
    permuted_captions,
)

OUTPUT_KEYS = ["id", "sig", "caption", "permuted", "captions", "zone_index", "n_sources"]


def scene_dataset(manifest_path, data_root, sample_rate, zones=None, train=False):
    """Builds a ``DynamicItemDataset`` of scenes.

    Arguments
    ---------
    manifest_path : str
        SpeechBrain JSON manifest.
    data_root : str
        Replaces ``{data_root}`` in the ``wav`` paths.
    sample_rate : int
        The model's sample rate; files at another rate are resampled.
    zones : ZoneVocabulary or list of dict, optional
        The zone vocabulary of the captions.
    train : bool
        Draw a random caption phrasing per example (text augmentation).

    Returns
    -------
    speechbrain.dataio.dataset.DynamicItemDataset
    """
    zones = ZoneVocabulary.from_config(zones)
    dataset = sb.dataio.dataset.DynamicItemDataset.from_json(
        manifest_path, replacements={"data_root": data_root})
    for entry_id, entry in dataset.data.items():
        _complete_entry(manifest_path, entry_id, entry)

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav):
        return torch.from_numpy(load_stereo(wav, sample_rate))

    @sb.utils.data_pipeline.takes("caption", "captions", "sources")
    @sb.utils.data_pipeline.provides("caption", "permuted", "captions")
    def text_pipeline(caption, captions, sources):
        phrasing = random.randrange(len(captions)) if train else 0
        yield captions[phrasing]
        yield _hard_negatives(captions[phrasing], sources, phrasing, zones)
        yield captions

    @sb.utils.data_pipeline.takes("sources")
    @sb.utils.data_pipeline.provides("zone_index", "n_sources")
    def source_pipeline(sources):
        sources = sources or []
        yield zones.index(sources[0]["zone"]) if len(sources) == 1 else -1
        yield len(sources)

    for pipeline in (audio_pipeline, text_pipeline, source_pipeline):
        dataset.add_dynamic_item(pipeline)
    dataset.set_output_keys(OUTPUT_KEYS)
    return dataset


def _complete_entry(manifest_path, entry_id, entry):
    """Fills the optional keys of a user manifest and rejects empty captions."""
    caption = entry.get("caption")
    if not isinstance(caption, str) or not caption.strip():
        raise ValueError(f"{manifest_path}: entry {entry_id!r} has no caption; every "
                         "scene needs a non-empty 'caption'.")
    entry.setdefault("captions", [caption])
    entry.setdefault("sources", [])


def _hard_negatives(caption, sources, phrasing, zones):
    """Permuted-assignment captions, when the caption follows the composition rule.

    A user's free-form caption has no well-defined permutation, so it gets none (a
    negative in another style than the positive would be trivially easy).
    """
    if len(sources) < 2 or phrasing >= N_PHRASINGS:
        return []
    if caption != compose_caption(sources, phrasing, zones):
        return []
    return permuted_captions(sources, phrasing, zones)
