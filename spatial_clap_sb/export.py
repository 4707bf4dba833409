"""Exports a trained model as a folder that ``SpatialCLAP.from_hparams`` loads.

The folder holds ``hyperparams.yaml`` (the model section of the recipe's hparams, with
every reference and command-line override resolved, so it stands on its own) and one
``<module>.ckpt`` state dict per entry of its ``pretrainer`` loadables.
"""
import io
import os

import ruamel.yaml
import torch
from hyperpyyaml import resolve_references

HEADER = ("# Spatial-CLAP model exported by spatial_clap_sb.export from {source}.\n"
          "# Every value is resolved; load with SpatialCLAP.from_hparams(source=<folder>).\n")


def resolved_model_yaml(hparams_file, overrides=None, model_key="model"):
    """The ``model_key`` section of a recipe hparams file as stand-alone YAML text.

    Arguments
    ---------
    hparams_file : str
        The recipe's YAML (which ``!include``s the model file under ``model_key``).
    overrides : dict or str, optional
        The same overrides the run used (command line ones).
    model_key : str
        Top-level key of the model section.

    Returns
    -------
    str
    """
    with open(hparams_file, encoding="utf-8") as f:
        text = resolve_references(f, overrides or {}).getvalue()
    yaml = ruamel.yaml.YAML()
    model = yaml.load(text)[model_key]
    _strip_comments(model)  # comments of the source files lose their places here
    out = io.StringIO()
    yaml.dump(model, out)
    return HEADER.format(source=os.path.basename(hparams_file)) + out.getvalue()


def _strip_comments(node):
    if hasattr(node, "ca"):
        node.ca.items.clear()
        node.ca.comment = None
    children = node.values() if isinstance(node, dict) else (
        node if isinstance(node, list) else [])
    for child in children:
        _strip_comments(child)


def export_model(folder, hparams_file, overrides, modules):
    """Writes ``hyperparams.yaml`` and one checkpoint per module into ``folder``.

    Arguments
    ---------
    folder : str
        Destination (created).
    hparams_file : str
        The recipe's YAML file.
    overrides : dict or str
        The run's overrides.
    modules : dict of str -> torch.nn.Module
        The trained modules (DDP wrappers are unwrapped), saved as ``<name>.ckpt``.

    Returns
    -------
    str
        The folder.
    """
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "hyperparams.yaml"), "w", encoding="utf-8") as f:
        f.write(resolved_model_yaml(hparams_file, overrides))
    for name, module in modules.items():
        module = getattr(module, "module", module)
        tmp = os.path.join(folder, f"{name}.ckpt.tmp")
        torch.save(module.state_dict(), tmp)
        os.replace(tmp, os.path.join(folder, f"{name}.ckpt"))
    return folder


def check_checkpoint_fits(module, path, name, hint="was it exported with other "
                          "hyperparameters?"):
    """Raises ValueError when a saved state dict does not fit ``module``.

    SpeechBrain's Pretrainer loads non-strictly and only logs missing weights, which
    would leave part of a model at its random initialisation without a word.

    Arguments
    ---------
    module : torch.nn.Module
        The module built from the current hyperparameters.
    path : str
        Its ``.ckpt`` state dict.
    name : str
        The module's name (for the message).
    hint : str
        What to tell the user to check.
    """
    saved = torch.load(path, map_location="cpu", weights_only=True)
    expected = module.state_dict()
    missing = sorted(set(expected) - set(saved))
    unexpected = sorted(set(saved) - set(expected))
    resized = sorted(k for k in set(saved) & set(expected)
                     if tuple(saved[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or resized:
        raise ValueError(
            f"Checkpoint {path} does not fit the module {name!r}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, other shapes {resized[:5]} ({hint})")
