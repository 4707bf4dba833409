"""spatial_clap_sb: Spatial-CLAP for SpeechBrain.

Spatially-aware audio-text embeddings for stereo scenes with several sound sources.
Sub-packages follow the data flow: ``data`` (sources, spatialiser, scene mixer,
captions, manifests), ``models`` (content, spatial and text encoders), ``losses``,
``brain``, ``metrics`` and ``inference``.
"""
from spatial_clap_sb._versions import check_torchaudio_loads

check_torchaudio_loads()

__version__ = "0.1.0"
