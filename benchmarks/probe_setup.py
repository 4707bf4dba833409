"""What the probe benchmarks share: their command line, the model file and the train clips.

Used by ``binding_probe.py`` (audio side) and ``text_binding_probe.py`` (text side).
"""
import argparse

import torch
import yaml
from hyperpyyaml import load_hyperpyyaml

from spatial_clap_sb.data.prepare import split_mixer
from spatial_clap_sb.language import ZoneVocabulary


def probe_arguments(description, steps, n_test):
    """An argument parser with the options every probe takes.

    Arguments
    ---------
    description : str
    steps : int
        Default number of training steps.
    n_test : int
        Default number of test scenes scored.

    Returns
    -------
    argparse.ArgumentParser
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data_folder", required=True, help="a prepared data folder")
    parser.add_argument("--model_yaml", default="hparams/spatial_clap_model.yaml")
    parser.add_argument("--overrides", default="{}", help="YAML dict of top-level keys")
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--n_test", type=int, default=n_test, help="test scenes scored")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def load_probe(args):
    """Seeds torch, loads the model file and the train split's labelled clips.

    Returns
    -------
    model : dict
        The loaded model file (``audio_encoder``, ``text_tower``, ``zones``, ...).
    zones : ZoneVocabulary
    mixer : SceneMixer
        Over the train clips and rooms.
    clips_by_label : dict
        ``label -> [SourceClip]`` of the labelled train clips.
    """
    torch.manual_seed(args.seed)
    with open(args.model_yaml, encoding="utf-8") as f:
        model = load_hyperpyyaml(f, yaml.safe_load(args.overrides))
    zones = ZoneVocabulary.from_config(model["zones"])
    mixer = split_mixer(args.data_folder, "train")
    clips_by_label = {}
    for clip in mixer.clips:
        if clip.label is not None:
            clips_by_label.setdefault(clip.label, []).append(clip)
    if len(clips_by_label) < 2:
        raise ValueError(f"{args.data_folder}: the probes need source clips of two "
                         "labels or more (the built-in library has them).")
    return model, zones, mixer, clips_by_label
