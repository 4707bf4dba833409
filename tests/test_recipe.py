"""End-to-end checks of the training recipe on a few generated scenes.

The recipe runs as a user runs it (``python train.py hparams/spatial_clap.yaml`` with
command-line overrides), on tiny data, in a subprocess.
"""
import json
import os
import re
import socket
import subprocess
import sys

import pytest
import torch
from hyperpyyaml import load_hyperpyyaml
from tiny_model import TINY_RECIPE

RECIPE = os.path.join(os.path.dirname(__file__), "..", "recipes", "SpatialCLAP")

THREE_ZONES = ("[{name: west, low: -90, high: -30, phrases: [to the west], "
               "heldout_phrases: [westward]}, "
               "{name: middle, low: -30, high: 30, phrases: [in the middle], "
               "heldout_phrases: [at the middle]}, "
               "{name: east, low: 30, high: 90, phrases: [to the east], "
               "heldout_phrases: [eastward]}]")


def recipe_module():
    """The recipe's train.py as a module."""
    if RECIPE not in sys.path:
        sys.path.insert(0, RECIPE)
    import train
    return train


def test_the_finetuning_recipe_is_the_training_recipe_with_its_own_keys():
    """finetune.yaml extends spatial_clap.yaml: the same model and objective, the
    fine-tuning schedule, its own keys first and the command line last."""
    train = recipe_module()
    hparams_file, overrides = train.resolve_extends(
        os.path.join(RECIPE, "hparams", "finetune.yaml"),
        "pretrained_model: some/model\nlr: 0.0001")
    assert os.path.basename(hparams_file) == "spatial_clap.yaml"
    with open(hparams_file) as f:
        finetune = load_hyperpyyaml(f, overrides)
    with open(hparams_file) as f:
        training = load_hyperpyyaml(f)
    assert finetune["lr"] == 0.0001 and training["lr"] == 0.001  # command line wins
    assert finetune["pretrained_model"] == "some/model"
    assert finetune["source_zone_weight"] == 0.0 and training["source_zone_weight"] > 0
    assert finetune["epoch_counter"].limit_to_stop == 3
    assert finetune["scene_counts"]["train"] == {1: 200, 2: 200}
    assert finetune["output_folder"].startswith("results/finetune")
    for key in ("text_pooling_queries", "text_compose_clauses", "content_aware",
                "sample_rate", "scl_weight", "batch_size"):
        assert finetune[key] == training[key], key
    assert [type(m).__name__ for m in finetune["modules"].values()] == \
        [type(m).__name__ for m in training["modules"].values()]


@pytest.mark.parametrize("recipe", ["spatial_clap_pretrained.yaml", "audiocaps_gpu.yaml"])
def test_the_pretrained_encoder_recipes_resolve(recipe, tmp_path):
    """The frozen-encoder recipes extend the training one; the content encoder is the
    transformers model they name (here a tiny local AST in its place)."""
    from tiny_model import save_tiny_ast

    ast = save_tiny_ast(tmp_path / "ast")
    hparams_file, overrides = recipe_module().resolve_extends(
        os.path.join(RECIPE, "hparams", recipe),
        f"content_model: {ast}\nsource_csv: /corpus\naudio_dir: /audio")
    with open(hparams_file) as f:
        hparams = load_hyperpyyaml(f, overrides)
    encoder = hparams["model"]["content_encoder"]
    assert type(encoder).__name__ == "PretrainedAudioEncoder" and encoder.freeze
    assert encoder.source == ast and not hparams["dynamic_mixing"]
    if recipe == "audiocaps_gpu.yaml":
        assert hparams["source_format"] == "audiocaps" and hparams["precision"] == "bf16"
        assert hparams["model"]["chunk_seconds"] == hparams["mixer"]["scene_duration"] == 10


def run_recipe(tmp_path, *extra, launcher=None, timeout=600):
    """Runs train.py on the tiny data; returns its combined output."""
    command = (launcher or [sys.executable]) + [
        "train.py", "hparams/spatial_clap.yaml",
        f"--data_folder={tmp_path / 'data'}", f"--output_folder={tmp_path / 'out'}",
        *TINY_RECIPE, *extra]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    result = subprocess.run(command, cwd=RECIPE, capture_output=True, text=True,
                            timeout=timeout, env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output


def train_losses(out_folder):
    with open(out_folder / "train_log.txt") as f:
        return [float(m) for m in re.findall(r"train loss: ([0-9.e+-]+)", f.read())]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Three epochs on stored scenes (fixed data, so the loss must fall)."""
    tmp_path = tmp_path_factory.mktemp("recipe")
    output = run_recipe(tmp_path, "--number_of_epochs=3", "--dynamic_mixing=False")
    return tmp_path, output


def test_auto_precision_is_what_the_device_computes_natively(trained):
    from spatial_clap_sb.brain import training_precision

    _, output = trained
    expected = training_precision("cpu")
    assert f"Using training precision: `--precision={expected}`" in output
    assert "Using evaluation precision: `--eval_precision=fp32`" in output


def test_loss_is_finite_and_falls(trained):
    tmp_path, _ = trained
    losses = train_losses(tmp_path / "out")
    assert len(losses) == 3
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]


def test_test_metrics_have_every_key(trained):
    tmp_path, _ = trained
    with open(tmp_path / "out" / "test_metrics.json") as f:
        metrics = json.load(f)
    retrieval = {"t2a_R@1", "t2a_R@5", "t2a_R@10", "a2t_R@1", "a2t_R@5", "a2t_R@10",
                 "mAP@10"}
    assert retrieval | {"direction_acc", "direction_probe_acc"} <= set(metrics["test_1src"])
    assert retrieval | {"assignment_acc"} <= set(metrics["test_2src"])
    assert retrieval | {"assignment_acc"} <= set(metrics["test_3src"])
    for results in metrics.values():
        for key in retrieval:
            assert 0.0 <= results[key] <= 1.0


def test_exported_model_loads_and_embeds_like_training(trained):
    tmp_path, _ = trained
    folder = tmp_path / "out" / "model"
    with open(folder / "hyperparams.yaml") as f:
        hparams = load_hyperpyyaml(f)
    for name, module in hparams["modules"].items():
        module.load_state_dict(torch.load(folder / f"{name}.ckpt"))
        module.eval()
    wavs = torch.randn(2, 32000, 2) * 0.1
    with torch.no_grad():
        audio = hparams["modules"]["audio_encoder"](wavs)
        text = hparams["modules"]["text_tower"](["a sound on the left"])
    assert audio.shape == (2, hparams["embedding_dim"])
    assert torch.allclose(audio.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert text.shape == (1, hparams["embedding_dim"])
    # The recipe's text tower composes clauses, and the export keeps that setting.
    assert hparams["modules"]["text_tower"].compose_clauses


def test_source_zone_head_is_trained_and_checkpointed_but_not_exported(trained):
    """The objective's SELD-style read-out covers the labels of the training clips; it
    is checkpointed with the objective and not exported."""
    tmp_path, _ = trained
    checkpoints = list((tmp_path / "out" / "save").glob("CKPT*/objective.ckpt"))
    assert checkpoints
    weights = torch.load(checkpoints[0])["source_zone_head.readout.weight"]
    with open(tmp_path / "data" / "manifests" / "train.json") as f:
        labels = {s["label"] for e in json.load(f).values() for s in e["sources"]}
    assert weights.shape == (len(labels) * 5, 512)  # classes x five zones
    exported = os.listdir(tmp_path / "out" / "model")
    assert not [name for name in exported if "objective" in name or "source_zone" in name]


def test_every_objective_term_is_logged_in_training_and_validation(trained):
    """The train log names each term of the objective, for training and validation, and
    the terms times their weights add up to the logged loss."""
    tmp_path, _ = trained
    with open(tmp_path / "out" / "train_log.txt") as f:
        first_epoch = f.readline()
    for stage in ("train", "valid"):
        values = {name: float(re.search(rf"{stage} {name}: ([0-9.e+-]+)",
                                         first_epoch).group(1))
                  for name in ("loss", "clap", "scl", "text_consistency", "direction",
                               "source_zone", "content")}
        weighted = (values["clap"] + values["scl"] + 3 * values["text_consistency"]
                    + values["direction"] + 3 * values["source_zone"] + values["content"])
        assert weighted == pytest.approx(values["loss"], rel=0.02)  # logs round to 3 digits


def test_checkpoint_resumes(trained):
    tmp_path, _ = trained
    output = run_recipe(tmp_path, "--number_of_epochs=4", "--dynamic_mixing=False")
    assert "Going into epoch 4" in output
    assert "Going into epoch 1" not in output  # epochs 1-3 came from the checkpoint
    assert len(train_losses(tmp_path / "out")) == 4


def test_dynamic_mixing_the_mono_ablation_and_three_zones(tmp_path):
    """Mixing on the fly trains the mono model, and its export has no spatial stream;
    a three-zone vocabulary given on the command line is the one of the data, the
    metrics and the exported text tower."""
    run_recipe(tmp_path, "--number_of_epochs=1", "--dynamic_mixing=True",
               "--use_spatial_stream=False", f"--zones={THREE_ZONES}")
    folder = tmp_path / "out" / "model"
    with open(folder / "hyperparams.yaml") as f:
        exported = load_hyperpyyaml(f)
    assert not exported["use_spatial_stream"]
    assert exported["modules"]["text_tower"].zones.names == ["west", "middle", "east"]
    weights = torch.load(folder / "audio_encoder.ckpt")
    assert not any(k.startswith("spatial_encoder") for k in weights)
    with open(tmp_path / "data" / "manifests" / "test_2src.json") as f:
        scenes = json.load(f).values()
    assert {s["zone"] for scene in scenes for s in scene["sources"]} <= \
        {"west", "middle", "east"}
    with open(tmp_path / "out" / "test_metrics.json") as f:
        assert "direction_acc" in json.load(f)["test_1src_heldout"]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
def test_runs_under_torchrun_on_cpu(tmp_path):
    """Two gloo processes on CPU (SyncBatchNorm conversion off), not-content-aware."""
    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                "--master_addr=127.0.0.1", f"--master_port={port}"]
    output = run_recipe(tmp_path, "--number_of_epochs=1", "--content_aware=False",
                        launcher=launcher)
    assert (tmp_path / "out" / "test_metrics.json").exists()
    assert "content_aware: false" in (tmp_path / "out" / "model" /
                                      "hyperparams.yaml").read_text()
    assert "Going into epoch 1" in output


@pytest.mark.parametrize("recipe", ["spatial_clap.yaml", "finetune.yaml"])
def test_a_zones_override_reaches_the_model_objective_and_export(recipe):
    """--zones on the command line is the vocabulary of the text tower, the objective
    and the exported model file, not only of the data."""
    from spatial_clap_sb.export import resolved_model_yaml

    overrides = f"zones: {THREE_ZONES}"
    if recipe == "finetune.yaml":  # the folder is only read by train.py
        overrides += "\npretrained_model: results/spatial_clap/1234/model"
    hparams_file, overrides = recipe_module().resolve_extends(
        os.path.join(RECIPE, "hparams", recipe), overrides)
    with open(hparams_file) as f:
        hparams = load_hyperpyyaml(f, overrides)
    names = ["west", "middle", "east"]
    assert [z["name"] for z in hparams["zones"]] == names
    assert hparams["model"]["text_tower"].zones.names == names
    assert hparams["objective"].zones.names == names
    exported = load_hyperpyyaml(resolved_model_yaml(hparams_file, overrides))
    assert exported["modules"]["text_tower"].zones.names == names
