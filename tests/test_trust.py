"""A model folder from someone else runs no code of theirs unless the caller trusts it."""
import os
import shutil
import subprocess
import sys

import pytest
import torch
from tiny_model import REPO

from spatial_clap_sb.cli import main
from spatial_clap_sb.inference import SpatialCLAP
from spatial_clap_sb.trust import UntrustedModelError, check_weights, refused_tags

RECIPE = os.path.join(REPO, "recipes", "SpatialCLAP")


class _Payload:
    """Unpickling this creates a file: what a malicious checkpoint would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def poison(folder, checkpoint, marker):
    """Adds to a checkpoint a pickle that would create ``marker`` when loaded."""
    state = torch.load(folder / checkpoint, weights_only=True)
    state["payload"] = _Payload(str(marker))
    torch.save(state, folder / checkpoint)


def copy_model(model_dir, tmp_path, name="sent"):
    folder = tmp_path / name
    shutil.copytree(model_dir, folder)
    return folder


def append_yaml(folder, text):
    with open(folder / "hyperparams.yaml", "a", encoding="utf-8") as f:
        f.write(text)


@pytest.mark.parametrize("line", [
    "pwn: !apply:os.system ['touch {marker}']\n",
    "pwn: !apply:pathlib.Path.touch ['{marker}']\n",
    "pwn: !new:spatial_clap_sb.models.text.os.system ['touch {marker}']\n",
    "pwn: !!python/object/apply:os.system ['touch {marker}']\n",
])
def test_a_yaml_that_would_run_code_is_refused_and_runs_nothing(model_dir, tmp_path, line):
    folder = copy_model(model_dir, tmp_path)
    marker = tmp_path / "pwned"
    append_yaml(folder, line.format(marker=marker))
    with pytest.raises(UntrustedModelError) as error:
        SpatialCLAP.from_hparams(source=str(folder), savedir=str(tmp_path / "s"))
    message = str(error.value)
    assert str(folder / "hyperparams.yaml") in message
    assert "trust_remote_code=True" in message
    assert not marker.exists()


def test_an_include_is_refused(model_dir, tmp_path):
    folder = copy_model(model_dir, tmp_path)
    append_yaml(folder, "more: !include:other.yaml\n")
    with pytest.raises(UntrustedModelError, match="!include:other.yaml"):
        SpatialCLAP.from_hparams(source=str(folder), savedir=str(tmp_path / "s"))


def test_trust_remote_code_is_an_explicit_opt_in(model_dir, tmp_path):
    folder = copy_model(model_dir, tmp_path)
    marker = tmp_path / "ran"
    append_yaml(folder, f"side_effect: !apply:pathlib.Path.touch ['{marker}']\n")
    model = SpatialCLAP.from_hparams(source=str(folder), savedir=str(tmp_path / "s"),
                                     trust_remote_code=True)
    assert marker.exists() and model.sample_rate == 16000


def test_a_checkpoint_that_would_run_code_is_refused(model_dir, tmp_path):
    folder = copy_model(model_dir, tmp_path)
    marker = tmp_path / "pwned"
    poison(folder, "temperature.ckpt", marker)
    with pytest.raises(UntrustedModelError) as error:
        SpatialCLAP.from_hparams(source=str(folder), savedir=str(tmp_path / "s"))
    assert "temperature.ckpt: refused to load" in str(error.value)
    with pytest.raises(UntrustedModelError):
        check_weights(str(folder / "temperature.ckpt"))
    assert not marker.exists()


def test_the_normal_export_loads_and_its_yaml_has_no_refused_tag(model_dir, tmp_path):
    with open(os.path.join(model_dir, "hyperparams.yaml"), encoding="utf-8") as f:
        assert refused_tags(f.read()) == []
    model = SpatialCLAP.from_hparams(source=model_dir, savedir=str(tmp_path / "s"))
    assert model.encode_text(["a dog barks on the left"]).shape[0] == 1


def test_the_cli_refuses_with_the_tag_and_accepts_the_opt_in(model_dir, tmp_path,
                                                             files, capsys):
    folder = copy_model(model_dir, tmp_path)
    marker = tmp_path / "pwned"
    append_yaml(folder, f"pwn: !apply:pathlib.Path.touch ['{marker}']\n")
    args = ["embed", "--model", str(folder), files["left"], "--output",
            str(tmp_path / "emb")]
    assert main(args) == 1
    assert "!apply:pathlib.Path.touch (pathlib.Path.touch is not in the allow-list)" \
        in capsys.readouterr().err
    assert not marker.exists()
    assert main(args + ["--trust_remote_code"]) == 0 and marker.exists()


def test_finetuning_refuses_a_checkpoint_that_would_run_code(model_dir, tmp_path):
    folder = copy_model(model_dir, tmp_path)
    marker = tmp_path / "pwned"
    poison(folder, "audio_encoder.ckpt", marker)
    command = [sys.executable, "train.py", "hparams/finetune.yaml",
               f"--pretrained_model={folder}", f"--data_folder={tmp_path / 'data'}",
               f"--output_folder={tmp_path / 'out'}"]
    result = subprocess.run(command, cwd=RECIPE, capture_output=True, text=True,
                            timeout=300, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert result.returncode != 0
    assert f"train.py: {folder / 'audio_encoder.ckpt'}: refused to load" in result.stderr
    assert not marker.exists() and not (tmp_path / "data").exists()


def test_speechbrains_own_loader_refuses_pickled_code_even_when_the_yaml_is_trusted(
        model_dir, tmp_path):
    """trust_remote_code covers the YAML; the weights still go through torch.load,
    whose default (weights_only=True) refuses a pickle that would run code."""
    folder = copy_model(model_dir, tmp_path)
    marker = tmp_path / "pwned"
    poison(folder, "text_tower.ckpt", marker)
    with pytest.raises(Exception, match="[Ww]eights only load failed"):
        SpatialCLAP.from_hparams(source=str(folder), savedir=str(tmp_path / "s"),
                                 trust_remote_code=True)
    assert not marker.exists()
