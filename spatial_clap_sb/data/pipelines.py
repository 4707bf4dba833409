"""SpeechBrain data pipelines over scene manifests.

A manifest entry (see :mod:`spatial_clap_sb.data.prepare`) becomes a batch item with:

- ``sig``: stereo waveform ``[time, 2]`` (resampled to the model's rate, never downmixed)
- ``caption``: the scene caption (a random phrasing in training, phrasing 0 otherwise)
- ``permuted``: the permuted-assignment captions in the same phrasing (SCL negatives)
- ``captions``: every phrasing (several captions per clip, for retrieval metrics)
- ``zone_index``: the zone of a one-source scene, -1 for several sources
- ``n_sources`` and ``sources`` (per source: caption, label, zone, ...)

Stored scenes come from a manifest (:func:`scene_dataset`); training scenes can also be
mixed on the fly (:func:`dynamic_scene_dataset`). User recordings enter here too: any manifest with ``wav``, ``caption`` and, for the
spatial metrics, ``sources`` with ``caption`` and ``zone``.
"""
import random

import numpy as np
import speechbrain as sb
import torch

from spatial_clap_sb.data.audio_io import load_stereo
from spatial_clap_sb.data.captions import (
    N_PHRASINGS,
    ZoneVocabulary,
    compose_caption,
    moved_captions,
    permuted_captions,
    shuffled_mentions,
)

OUTPUT_KEYS = ["id", "sig", "caption", "permuted", "captions", "zone_index", "n_sources",
               "sources"]


def scene_dataset(manifest_path, data_root, sample_rate, zones=None, train=False,
                  zone_negatives=False, shuffle_mentions=0.0):
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
        The zone vocabulary of the captions.
    train : bool
        Draw a random caption phrasing per example (text augmentation).
    zone_negatives : bool
        Give one-source scenes their other-zone captions as hard negatives (training
        only: evaluation's assignment accuracy counts scenes with negatives).
    shuffle_mentions : float
        Share of multi-source training captions (and their permuted negatives) that
        mention the sounds in random order instead of left to right (training only;
        see :func:`~spatial_clap_sb.data.captions.shuffled_mentions`).

    Returns
    -------
    speechbrain.dataio.dataset.DynamicItemDataset
    """
    data = sb.dataio.dataio.load_data_json(manifest_path,
                                           replacements={"data_root": data_root})
    for entry_id, entry in data.items():
        _complete_entry(manifest_path, entry_id, entry)
    # Built after completing the entries: the dataset takes its static keys from the
    # first entry, and a key missing there would be unknown to the pipeline.
    dataset = sb.dataio.dataset.DynamicItemDataset(data)

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav):
        return torch.from_numpy(load_stereo(wav, sample_rate))

    dataset.add_dynamic_item(audio_pipeline)
    return _add_scene_pipelines(dataset, zones, train, zone_negatives,
                                shuffle_mentions if train else 0.0)


def dynamic_scene_dataset(mixer, scene_counts, seed=0, zones=None, zone_negatives=False,
                          shuffle_mentions=0.0):
    """Training scenes mixed on the fly: every epoch hears new mixtures.

    Each item draws a new scene (clips, room, zones, levels) from the mixer, seeded by
    ``seed``, the item's index and a number drawn from torch's global generator, which
    DataLoader workers re-seed every epoch: runs with the same seed hear the same
    scenes, and no two epochs do. Costs two convolutions per source.

    Arguments
    ---------
    mixer : SceneMixer
        Over the train clips and the train RIR bank.
    scene_counts : dict
        ``{n_sources: count}`` scenes per epoch.
    seed : int
    zones : ZoneVocabulary or list of dict, optional
    zone_negatives : bool
        Give one-source scenes their other-zone captions as hard negatives.
    shuffle_mentions : float
        Share of multi-source captions that mention the sounds in random order.

    Returns
    -------
    speechbrain.dataio.dataset.DynamicItemDataset
        With the same output keys as :func:`scene_dataset`.
    """
    data, index = {}, 0
    for n_sources, count in sorted(scene_counts.items()):
        for _ in range(int(count)):
            data[f"mix_{index:06d}"] = {"index": index, "n_sources": int(n_sources)}
            index += 1
    dataset = sb.dataio.dataset.DynamicItemDataset(data)

    @sb.utils.data_pipeline.takes("index", "n_sources")
    @sb.utils.data_pipeline.provides("sig", "captions", "sources")
    def mixing_pipeline(index, n_sources):
        draw = int(torch.randint(2**31 - 1, ()))
        scene = mixer.draw(np.random.default_rng([seed, index, draw]), n_sources)
        yield torch.from_numpy(mixer.render(scene))
        yield scene["captions"]
        yield scene["sources"]

    dataset.add_dynamic_item(mixing_pipeline)
    return _add_scene_pipelines(dataset, zones, train=True, zone_negatives=zone_negatives,
                                shuffle_mentions=shuffle_mentions)


def _add_scene_pipelines(dataset, zones, train, zone_negatives=False,
                         shuffle_mentions=0.0):
    """Caption, hard-negative and zone items shared by stored and mixed scenes."""
    zones = ZoneVocabulary.from_config(zones)

    @sb.utils.data_pipeline.takes("captions", "sources")
    @sb.utils.data_pipeline.provides("caption", "permuted")
    def text_pipeline(captions, sources):
        phrasing = random.randrange(len(captions)) if train else 0
        caption = captions[phrasing]
        if not _follows_rule(caption, sources, phrasing, zones):
            # A user's free-form caption has no well-defined permutation, so it gets no
            # negatives (one in another style than the positive would be trivially easy).
            yield caption
            yield []
            return
        order = "left_to_right"
        if len(sources) > 1 and random.random() < shuffle_mentions:
            sources, order = shuffled_mentions(sources, random), "as_given"
            caption = compose_caption(sources, phrasing, zones, order)
        yield caption
        yield _hard_negatives(sources, phrasing, zones, zone_negatives, order)

    @sb.utils.data_pipeline.takes("sources")
    @sb.utils.data_pipeline.provides("zone_index", "n_sources")
    def source_pipeline(sources):
        yield zones.index(sources[0]["zone"]) if len(sources) == 1 else -1
        yield len(sources)

    dataset.add_dynamic_item(text_pipeline)
    dataset.add_dynamic_item(source_pipeline)
    dataset.set_output_keys(OUTPUT_KEYS)
    return dataset


def _complete_entry(manifest_path, entry_id, entry):
    """Fills the optional keys of a user manifest and rejects empty captions.

    The static ``caption`` is moved into ``captions``: SpeechBrain returns a static key
    in place of a dynamic item of the same name, which would hide the phrasing drawn
    by the text pipeline.
    """
    caption = entry.pop("caption", None)
    if not isinstance(caption, str) or not caption.strip():
        raise ValueError(f"{manifest_path}: entry {entry_id!r} has no caption; every "
                         "scene needs a non-empty 'caption'.")
    entry.setdefault("captions", [caption])
    entry.setdefault("sources", [])


def _follows_rule(caption, sources, phrasing, zones):
    """True when ``caption`` is the composed caption of ``sources`` in this phrasing."""
    return (bool(sources) and phrasing < N_PHRASINGS
            and caption == compose_caption(sources, phrasing, zones))


def _hard_negatives(sources, phrasing, zones, zone_negatives=False,
                    order="left_to_right"):
    """Hard negatives of a caption composed from ``sources`` (in this phrasing, order).

    Permuted-assignment captions for several sources; with ``zone_negatives``, a
    one-source scene gets its caption with the source moved to every other zone.
    """
    if len(sources) == 1:
        return moved_captions(sources, phrasing, zones) if zone_negatives else []
    return permuted_captions(sources, phrasing, zones, order)
