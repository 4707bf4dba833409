"""The import-time check that torchaudio loads under the installed torch."""
import subprocess
import sys
import textwrap

import pytest

from spatial_clap_sb._versions import (FIX_COMMAND, TORCH_REQUIREMENTS,
                                       check_torchaudio_loads, installed_version)

UNDEFINED_SYMBOL = ("Could not load this library: .../torchaudio/lib/libtorchaudio.so "
                    "(undefined symbol: torch_exception_get_what_without_backtrace)")


def test_the_installed_pair_loads():
    check_torchaudio_loads()


def test_the_installed_pair_meets_the_requirements():
    from packaging.requirements import Requirement

    for line in TORCH_REQUIREMENTS:
        requirement = Requirement(line)
        version = installed_version(requirement.name)
        assert requirement.specifier.contains(version.split("+")[0]), (line, version)


def test_a_library_that_does_not_load_names_both_versions_and_the_fix():
    def undefined_symbol():
        raise OSError(UNDEFINED_SYMBOL)

    with pytest.raises(ImportError) as error:
        check_torchaudio_loads(undefined_symbol)
    message = str(error.value)
    assert f"torchaudio {installed_version('torchaudio')}" in message
    assert f"torch {installed_version('torch')}" in message
    assert "undefined symbol" in message
    assert FIX_COMMAND in message


def test_a_missing_torchaudio_is_named(monkeypatch):
    import spatial_clap_sb._versions as versions

    monkeypatch.setattr(versions, "installed_version",
                        lambda name: None if name == "torchaudio" else "2.14.1")
    with pytest.raises(ImportError, match="needs torchaudio"):
        versions.check_torchaudio_loads()


def test_importing_the_package_with_a_broken_torchaudio_gives_one_clear_error(tmp_path):
    """A torchaudio whose library fails to load shadows the real one in a subprocess."""
    shadow = tmp_path / "torchaudio"
    shadow.mkdir()
    (shadow / "__init__.py").write_text(f"raise OSError({UNDEFINED_SYMBOL!r})\n")
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import spatial_clap_sb
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("ImportError: torchaudio ")
    assert "does not load under torch" in last_line and FIX_COMMAND in last_line
    assert "undefined symbol" in last_line
    # One error, not a chain of tracebacks from inside torchaudio.
    assert "direct cause" not in result.stderr
    assert result.stderr.count("Traceback") == 1


def test_the_loaders_innermost_message_is_named():
    def chained():
        try:
            raise OSError("libtorchaudio.so: undefined symbol: torch_exception_get_what")
        except OSError as inner:
            raise OSError("Could not load this library: libtorchaudio.so") from inner

    with pytest.raises(ImportError, match="undefined symbol: torch_exception_get_what"):
        check_torchaudio_loads(chained)
