"""Tests of the SpeechBrain scene pipelines (spatial_clap_sb.data.pipelines)."""

import json
import os

import numpy as np
import pytest
import torch
from speechbrain.dataio.batch import PaddedBatch
from speechbrain.dataio.dataloader import make_dataloader
from speechbrain.utils.epoch_loop import EpochCounter

from spatial_clap_sb.data.audio_io import load_stereo, write_audio
from spatial_clap_sb.data.pipelines import (
    OUTPUT_KEYS,
    dynamic_scene_dataset,
    scene_dataset,
)
from spatial_clap_sb.data.prepare import DATA_ROOT, prepare_spatial_scenes, split_mixer
from spatial_clap_sb.language import N_PHRASINGS, ZoneVocabulary, permuted_captions

SR = 16000
SCENE_COUNTS = {"test_1src": {1: 3}, "test_2src": {2: 3}, "test_3src": {3: 2}}
N_PERMUTED = {1: 0, 2: 1, 3: 5}
ZONES = ZoneVocabulary.default()


def _load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _write_json(path, content):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(content, f)
    return str(path)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scenes")
    paths = prepare_spatial_scenes(
        str(folder), n_clips_per_class=3, scene_counts=SCENE_COUNTS,
        spatialiser=dict(n_rooms=1, positions_per_zone=2, max_order=2),
        mixer=dict(scene_duration=0.5), seed=11)
    return str(folder), paths


@pytest.fixture(scope="module")
def user_manifest(tmp_path_factory):
    """Stereo recordings of different lengths, with captions only (no sources)."""
    folder = tmp_path_factory.mktemp("user")
    rng = np.random.default_rng(0)
    entries = {}
    for i, seconds in enumerate((0.25, 0.5, 0.4)):
        audio = 0.1 * rng.standard_normal((int(seconds * SR), 2)).astype(np.float32)
        write_audio(folder / f"rec{i}.wav", audio, SR)
        entries[f"rec{i}"] = {"wav": f"{DATA_ROOT}/rec{i}.wav",
                              "caption": f"recording number {i} in the lab"}
    return str(folder), _write_json(folder / "user.json", entries)


def _items(dataset):
    return [dataset[i] for i in range(len(dataset))]


@pytest.mark.parametrize("name", list(SCENE_COUNTS))
def test_items(prepared, name):
    folder, paths = prepared
    manifest = _load(paths[name])
    dataset = scene_dataset(paths[name], folder, SR)
    assert len(dataset) == len(manifest)
    for item in _items(dataset):
        assert set(item) == set(OUTPUT_KEYS)
        entry = manifest[item["id"]]
        sig = item["sig"]
        assert isinstance(sig, torch.Tensor)
        assert sig.dtype == torch.float32
        assert sig.shape == (8000, 2)
        wav = entry["wav"].replace(DATA_ROOT, folder)
        np.testing.assert_array_equal(sig.numpy(), load_stereo(wav, SR))
        k = entry["n_sources"]
        assert item["n_sources"] == k
        assert item["captions"] == entry["captions"]
        assert len(item["captions"]) == N_PHRASINGS
        assert item["caption"] == entry["captions"][0] == entry["caption"]
        assert len(item["permuted"]) == N_PERMUTED[k]
        assert item["permuted"] == entry["permuted_captions"][0]
        if entry["language"] == "template":
            assert item["permuted"] == permuted_captions(entry["sources"], 0, ZONES)
        assert item["caption"] not in item["permuted"]
        if k == 1:
            assert item["zone_index"] == ZONES.index(entry["sources"][0]["zone"])
            assert 0 <= item["zone_index"] < len(ZONES)
        else:
            assert item["zone_index"] == -1


def test_resampled_to_model_rate(prepared):
    folder, paths = prepared
    dataset = scene_dataset(paths["test_2src"], folder, 8000)
    assert dataset[0]["sig"].shape == (4000, 2)


@pytest.mark.parametrize("name", ["test_2src", "test_3src"])
def test_train_draws_phrasings(prepared, name):
    folder, paths = prepared
    counter = EpochCounter(30)
    dataset = scene_dataset(paths[name], folder, SR, train=True, epoch_counter=counter)
    manifest = _load(paths[name])
    seen = set()
    for epoch in range(30):  # a new draw each epoch, the same within one
        counter.current = epoch
        item = dataset[0]
        assert dataset[0]["caption"] == item["caption"]
        entry = manifest[item["id"]]
        assert item["caption"] in entry["captions"]
        phrasing = entry["captions"].index(item["caption"])
        seen.add(phrasing)
        # Hard negatives in the same sentence form as the positive.
        assert item["permuted"] == permuted_captions(entry["sources"], phrasing, ZONES)
        assert item["permuted"] == entry["permuted_captions"][phrasing]
        assert len(item["permuted"]) == N_PERMUTED[entry["n_sources"]]
        assert item["captions"] == entry["captions"]  # all phrasings, unchanged
    assert seen == set(range(N_PHRASINGS))


@pytest.mark.parametrize("name", ["test_1src", "test_2src", "test_3src"])
def test_held_out_manifests_describe_the_same_scenes_in_held_out_language(prepared, name):
    folder, paths = prepared
    template, heldout = _load(paths[name]), _load(paths[name + "_heldout"])
    assert list(template) == list(heldout)
    zones = ZoneVocabulary.default()
    training_words = {p for z in zones.zones for p in z.phrases}
    for scene_id, entry in heldout.items():
        assert entry["wav"] == template[scene_id]["wav"]
        assert entry["sources"] == template[scene_id]["sources"]
        assert entry["language"] == "heldout" and template[scene_id]["language"] == \
            "template"
        for caption, negatives in zip(entry["captions"], entry["permuted_captions"]):
            assert not any(f" {w} " in f" {caption.lower()} " for w in training_words)
            for source in entry["sources"]:
                assert any(w in caption.lower() for w in zones[source["zone"]]
                           .heldout_phrases)
            assert len(negatives) == N_PERMUTED[entry["n_sources"]]
    item = scene_dataset(paths[name + "_heldout"], folder, SR)[0]
    assert item["language"] == "heldout"
    assert item["caption"] == heldout[item["id"]]["captions"][0]


def test_eval_caption_is_fixed(prepared):
    folder, paths = prepared
    dataset = scene_dataset(paths["test_2src"], folder, SR, train=False)
    assert len({dataset[0]["caption"] for _ in range(10)}) == 1


def test_custom_vocabulary_zone_index(tmp_path):
    three = [{"name": "l", "low": -90, "high": -30, "phrase": "on the left"},
             {"name": "c", "low": -30, "high": 30, "phrase": "ahead"},
             {"name": "r", "low": 30, "high": 90, "phrase": "on the right"}]
    folder = tmp_path / "three"
    paths = prepare_spatial_scenes(
        str(folder), n_clips_per_class=3, scene_counts={"test_1src": {1: 3},
                                                        "test_2src": {2: 1}},
        zones=three, spatialiser=dict(n_rooms=1, positions_per_zone=1, max_order=1),
        mixer=dict(scene_duration=0.25), seed=2)
    vocabulary = ZoneVocabulary(three)
    dataset = scene_dataset(paths["test_1src"], str(folder), SR, zones=three)
    manifest = _load(paths["test_1src"])
    for item in _items(dataset):
        zone = manifest[item["id"]]["sources"][0]["zone"]
        assert item["zone_index"] == vocabulary.index(zone)
    item = scene_dataset(paths["test_2src"], str(folder), SR, zones=three)[0]
    assert item["permuted"] and all(
        "ahead" in c or "left" in c for c in item["permuted"])


def test_user_manifest_without_sources(user_manifest):
    folder, path = user_manifest
    for train in (False, True):
        dataset = scene_dataset(path, folder, SR, train=train)
        for item in _items(dataset):
            caption = f"recording number {item['id'][3:]} in the lab"
            assert item["caption"] == caption
            assert item["captions"] == [caption]
            assert item["permuted"] == []
            assert item["zone_index"] == -1
            assert item["n_sources"] == 0
            assert item["sig"].shape[1] == 2


def test_mixed_user_manifest(prepared, tmp_path):
    """Entries with and without sources in one manifest; a free-form caption of a
    two-source scene gets no hard negatives (they would be in another style)."""
    folder, paths = prepared
    scenes = _load(paths["test_2src"])
    scene_id, scene = next(iter(scenes.items()))
    single_id, single = next(iter(_load(paths["test_1src"]).items()))
    entries = {
        "plain": {"wav": scene["wav"], "caption": "two things happen"},
        scene_id: scene,
        "freeform": {"wav": scene["wav"], "caption": "something else entirely",
                     "sources": scene["sources"]},
        single_id: {"wav": single["wav"], "caption": single["caption"],
                    "sources": single["sources"]},
    }
    dataset = scene_dataset(_write_json(tmp_path / "mixed.json", entries), folder, SR)
    items = {item["id"]: item for item in _items(dataset)}
    assert items["plain"]["permuted"] == []
    assert items["plain"]["zone_index"] == -1
    assert len(items[scene_id]["permuted"]) == 1
    assert items["freeform"]["permuted"] == []
    assert items["freeform"]["n_sources"] == 2
    assert items[single_id]["zone_index"] == ZONES.index(single["sources"][0]["zone"])
    assert items[single_id]["captions"] == [single["caption"]]


@pytest.mark.parametrize("bad", ["", "   ", None])
def test_empty_caption_raises(user_manifest, tmp_path, bad):
    folder, path = user_manifest
    entries = _load(path)
    entries["broken_entry_7"] = {"wav": entries["rec0"]["wav"]}
    if bad is not None:
        entries["broken_entry_7"]["caption"] = bad
    bad_path = _write_json(tmp_path / "bad.json", entries)
    with pytest.raises(ValueError, match="broken_entry_7"):
        scene_dataset(bad_path, folder, SR)


def test_padded_batch_of_scenes(prepared):
    folder, paths = prepared
    dataset = scene_dataset(paths["test_3src"], folder, SR)
    loader = make_dataloader(dataset, batch_size=2)
    batches = list(loader)
    assert len(batches) == 1
    batch = batches[0]
    assert isinstance(batch, PaddedBatch)
    assert batch.sig.data.shape == (2, 8000, 2)
    assert batch.sig.data.dtype == torch.float32
    torch.testing.assert_close(batch.sig.lengths, torch.ones(2))
    assert len(batch.caption) == 2 and all(isinstance(c, str) for c in batch.caption)
    assert [len(p) for p in batch.permuted] == [5, 5]
    assert [len(c) for c in batch.captions] == [N_PHRASINGS] * 2
    assert list(batch.zone_index) == [-1, -1]
    assert list(batch.n_sources) == [3, 3]


def test_mixed_scenes_are_rendered_a_batch_at_a_time(prepared):
    """Items of scenes mixed on the fly hold the drawn scene; the dataset's collate
    function renders a batch of them into ``sig``, each as it sounds alone."""
    folder, _ = prepared
    mixer = split_mixer(folder, "test")
    dataset = dynamic_scene_dataset(mixer, {1: 2, 2: 3}, seed=5)
    item = dataset[3]
    assert "scene" in item and "sig" not in item
    assert item["sources"] == item["scene"]["sources"]
    loader = make_dataloader(dataset, batch_size=5, collate_fn=dataset.collate_fn)
    batch = next(iter(loader))
    assert isinstance(batch, PaddedBatch) and "scene" not in batch.__dict__
    assert batch.sig.data.shape == (5, mixer.config.n_samples, 2)
    for i in range(5):
        alone = mixer.render(dataset[i]["scene"])
        assert np.abs(batch.sig.data[i].numpy() - alone).max() < 1e-6
    assert list(batch.n_sources) == [1, 1, 2, 2, 2]
    assert [len(p) for p in batch.permuted] == [0, 0, 1, 1, 1]


def test_padded_batch_pads_stereo(user_manifest):
    folder, path = user_manifest
    dataset = scene_dataset(path, folder, SR)
    loader = make_dataloader(dataset, batch_size=3)
    batch = next(iter(loader))
    sig, lengths = batch.sig
    assert sig.shape == (3, 8000, 2)  # padded to the longest, both channels kept
    torch.testing.assert_close(lengths, torch.tensor([0.5, 1.0, 0.8]))
    assert torch.all(sig[0, 4000:] == 0)
    first = load_stereo(os.path.join(folder, "rec0.wav"), SR)
    np.testing.assert_array_equal(sig[0, :4000].numpy(), first)
    assert batch.permuted == [[], [], []]
