"""A frozen pretrained content encoder in the recipe (``--content_model=...``): its
features are computed once per scene file and read from disk after, its weights stay
out of checkpoints and exports, and the exported model reloads them from the id.

The pretrained model is a tiny random AST the tests save locally (no model hub).
"""
import json
import os
import re
import subprocess
import sys

import pytest
import torch
from tiny_model import TINY_RECIPE, save_tiny_ast

from spatial_clap_sb.data.content_features import ContentFeatureCache
from spatial_clap_sb.data.pipelines import scene_dataset
from spatial_clap_sb.data.prepare import prepare_spatial_scenes
from spatial_clap_sb.models.content import build_content_encoder
from spatial_clap_sb.models.pretrained_audio import PretrainedAudioEncoder

RECIPE = os.path.join(os.path.dirname(__file__), "..", "recipes", "SpatialCLAP")
TINY = TINY_RECIPE + ["--dynamic_mixing=False"]


def run(tmp_path, ast, *extra, output="out"):
    command = [sys.executable, "train.py", "hparams/spatial_clap.yaml",
               f"--data_folder={tmp_path / 'data'}", f"--output_folder={tmp_path / output}",
               f"--content_model={ast}", *TINY, *extra]
    result = subprocess.run(command, cwd=RECIPE, capture_output=True, text=True,
                            timeout=900, env=dict(os.environ, HF_HUB_OFFLINE="1",
                                                  OMP_NUM_THREADS="1"))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("pretrained_recipe")
    ast = save_tiny_ast(tmp_path / "ast")
    first = run(tmp_path, ast, "--number_of_epochs=2")
    again = run(tmp_path, ast, "--number_of_epochs=2", output="out_again")
    return tmp_path, ast, first, again


def computed_and_cached(output):
    found = re.search(r"Content features of .*: (\d+) scene files computed, (\d+) were "
                      r"cached", output)
    assert found, output[-3000:]
    return int(found.group(1)), int(found.group(2))


def scene_files(data):
    return {entry["wav"] for name in os.listdir(data / "manifests")
            for entry in json.load(open(data / "manifests" / name)).values()}


def test_features_are_computed_once_per_scene_file(trained):
    tmp_path, _, first, again = trained
    n_files = len(scene_files(tmp_path / "data"))
    assert computed_and_cached(first) == (n_files, 0)
    assert computed_and_cached(again) == (0, n_files)  # a second run computes nothing
    stored = [f for _, _, files in os.walk(tmp_path / "data" / "content_features")
              for f in files]
    assert len(stored) == n_files


def test_frozen_weights_are_not_checkpointed_or_exported(trained):
    tmp_path, _, _, _ = trained
    saved = list((tmp_path / "out" / "save").glob("CKPT*/audio_encoder.ckpt"))
    exported = tmp_path / "out" / "model" / "audio_encoder.ckpt"
    for path in saved + [exported]:
        keys = torch.load(path, map_location="cpu", weights_only=True)
        assert not [k for k in keys if k.startswith("content_encoder.model.")]
        assert [k for k in keys if k.startswith("spatial_encoder.")]  # the rest is kept
    assert saved


def test_the_export_records_the_id_and_reloads_the_weights_from_it(trained, tmp_path):
    from spatial_clap_sb.inference import SpatialCLAP

    out, ast = trained[0] / "out", trained[1]
    assert f"content_model: {ast}" in (out / "model" / "hyperparams.yaml").read_text()
    model = SpatialCLAP.from_hparams(source=str(out / "model"), savedir=str(tmp_path))
    reference = PretrainedAudioEncoder(ast).model.state_dict()
    loaded = model.mods.audio_encoder.content_encoder.model.state_dict()
    assert all(torch.equal(reference[k], loaded[k]) for k in reference)
    embedding = model.encode_signals(torch.randn(1, 32000, 2) * 0.1)
    assert embedding.shape == (1, 512) and torch.isfinite(embedding).all()


def test_cached_frames_are_read_from_disk_on_the_second_epoch(tmp_path):
    """Two passes over a dataset with the cache: the encoder runs once per scene."""
    manifests = prepare_spatial_scenes(
        tmp_path / "data", n_clips_per_class=2, scene_counts={"train": {1: 3, 2: 3}},
        spatialiser={"n_rooms": 1, "positions_per_zone": 1, "max_order": 1},
        heldout_language=False)
    encoder = build_content_encoder(None, save_tiny_ast(tmp_path / "ast"))
    calls = []
    encoder.model.register_forward_hook(lambda *args: calls.append(1))
    cache = ContentFeatureCache(encoder, tmp_path / "features", 16000)
    dataset = scene_dataset(manifests["train"], str(tmp_path / "data"), 16000,
                            content_cache=cache)
    first = [item["content_frames"] for item in dataset]
    assert len(calls) == 6 and cache.computed == 6
    second = [item["content_frames"] for item in dataset]
    assert len(calls) == 6 and cache.read == 6
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    mid = torch.stack([torch.as_tensor(item["sig"]) for item in dataset][:1]).mean(-1)
    assert torch.allclose(encoder(mid)[0], first[0], rtol=1e-2, atol=1e-3)  # float16


def test_a_frozen_encoder_saves_without_its_weights_and_loads_strictly(tmp_path):
    encoder = PretrainedAudioEncoder(save_tiny_ast(tmp_path / "ast"))
    state = encoder.state_dict()
    assert not [k for k in state if k.startswith("model.")]
    encoder.load_state_dict(state, strict=True)
    trainable = PretrainedAudioEncoder(str(tmp_path / "ast"), freeze=False)
    assert [k for k in trainable.state_dict() if k.startswith("model.")]
    with pytest.raises(ValueError, match="frozen pretrained"):
        ContentFeatureCache(trainable, tmp_path / "features", 16000)
