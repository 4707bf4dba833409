"""The torch/torchaudio pairing check that runs when spatial_clap_sb is imported."""
import pytest

from spatial_clap_sb._versions import FIX_COMMAND, check_torch_pair, release_line


def test_release_line_ignores_local_build_tags():
    assert release_line("2.11.0+cpu") == (2, 11)
    assert release_line("2.7.1") == (2, 7)


def test_a_matching_pair_passes():
    check_torch_pair("2.11.0+cu130", "2.11.0")


def test_a_mismatched_pair_names_both_versions_and_the_fix():
    with pytest.raises(ImportError) as error:
        check_torch_pair("2.13.0", "2.11.0")
    message = str(error.value)
    assert "torch 2.13.0" in message and "torchaudio 2.11.0" in message
    assert FIX_COMMAND in message


def test_the_installed_pair_matches():
    check_torch_pair()
