"""What loading a model folder from someone else may do: build this package's modules.

An exported model folder holds ``hyperparams.yaml`` and ``*.ckpt`` weights. HyperPyYAML
tags such as ``!apply:os.system`` call any Python function while the file is read, and
a pickled checkpoint can run code while it is unpickled. So, unless the caller opts in
with ``trust_remote_code=True`` (a trust decision about who made the folder, as in
transformers), a model folder is checked before anything in it is loaded:

* every tag that constructs, names or calls something (``!new:``, ``!name:``,
  ``!apply:``, ``!applyref:``, ``!module:``) must resolve to a class or function
  defined in the allow-list :data:`ALLOWED_MODULES` (this package's models,
  ``torch.nn``, SpeechBrain's ``Pretrainer``); ``!include:`` and any other tag but
  ``!ref``, ``!copy``, ``!tuple`` and ``!PLACEHOLDER`` are refused;
* every ``.ckpt`` file must load with ``torch.load(weights_only=True)``: tensors and
  plain containers only.

A refusal raises :class:`UntrustedModelError` naming the file, the line and the tag,
before any of it has run.
"""
import glob
import os
import pickle
import pydoc

import ruamel.yaml
import torch

# Where the classes and functions a model's YAML may build or call are defined.
ALLOWED_MODULES = ("spatial_clap_sb.models", "torch.nn")
ALLOWED_NAMES = ("speechbrain.utils.parameter_transfer.Pretrainer",)
CALLING_TAGS = ("!new:", "!name:", "!apply:", "!applyref:", "!module:")
PLAIN_TAGS = ("!ref", "!copy", "!tuple", "!PLACEHOLDER")
TRUST_HINT = ("If you trust whoever made this folder, load it with "
              "trust_remote_code=True (spatial-clap: --trust_remote_code).")


class UntrustedModelError(ValueError):
    """A model folder asks to run code outside the allow-list (names file and tag)."""


def refused_tags(yaml_text):
    """The tags of a HyperPyYAML text that loading would not be allowed to run.

    Arguments
    ---------
    yaml_text : str

    Returns
    -------
    list of tuple
        ``(line, tag, reason)`` per refused tag, ``line`` 1-based.

    Example
    -------
    >>> refused_tags("a: !new:torch.nn.Linear [2, 2]\\nb: !apply:os.system [ls]\\n")
    [(2, '!apply:os.system', 'os.system is not in the allow-list')]
    """
    refused = []
    for node in _nodes(ruamel.yaml.YAML().compose(yaml_text)):
        tag = _tag(node)
        if not tag or tag.startswith("tag:yaml.org,2002:") and "python" not in tag:
            continue
        reason = _refusal(tag)
        if reason:
            refused.append((node.start_mark.line + 1, tag, reason))
    return refused


def check_model_yaml(path):
    """Raises :class:`UntrustedModelError` if ``path`` would run code outside the
    allow-list when loaded (see :func:`refused_tags`)."""
    with open(path, encoding="utf-8") as f:
        refused = refused_tags(f.read())
    if refused:
        lines = "\n".join(f"  line {line}: {tag} ({reason})"
                          for line, tag, reason in refused)
        raise UntrustedModelError(
            f"{path}: refused to load; these tags would run code outside the allow-list "
            f"({', '.join(ALLOWED_MODULES + ALLOWED_NAMES)}):\n{lines}\n{TRUST_HINT}")


def check_weights(path):
    """Raises :class:`UntrustedModelError` if a ``.ckpt`` holds more than tensors and
    plain containers (its pickle would run code when loaded)."""
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first_line = str(error).strip().splitlines()[0]
        raise UntrustedModelError(
            f"{path}: refused to load; it holds Python objects beyond tensors, which "
            f"unpickling would run ({first_line}). {TRUST_HINT}") from None


def check_model_folder(folder, hparams_file="hyperparams.yaml"):
    """Checks a model folder's YAML and every ``.ckpt`` in it.

    Example
    -------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> with open(os.path.join(folder, "hyperparams.yaml"), "w") as f:
    ...     _ = f.write("x: !apply:shutil.rmtree [/]\\n")
    >>> check_model_folder(folder)
    Traceback (most recent call last):
    ...
    spatial_clap_sb.trust.UntrustedModelError: ...
    """
    check_model_yaml(os.path.join(folder, hparams_file))
    for path in sorted(glob.glob(os.path.join(folder, "*.ckpt"))):
        check_weights(path)


def _nodes(node):
    """Every node of a composed YAML tree, parents first."""
    if node is None:
        return
    yield node
    if isinstance(node, ruamel.yaml.MappingNode):
        for key, value in node.value:
            yield from _nodes(key)
            yield from _nodes(value)
    elif isinstance(node, ruamel.yaml.SequenceNode):
        for item in node.value:
            yield from _nodes(item)


def _tag(node):
    tag = node.tag
    return getattr(tag, "value", tag)  # a Tag object in recent ruamel.yaml


def _refusal(tag):
    """Why a tag is refused, or None."""
    if tag in PLAIN_TAGS:
        return None
    prefix = next((p for p in CALLING_TAGS if tag.startswith(p)), None)
    if prefix is None:
        return "tag not allowed in a model folder"
    target = tag[len(prefix):]
    if target in ALLOWED_NAMES:
        return None
    if not target.startswith(tuple(m + "." for m in ALLOWED_MODULES)):
        return f"{target} is not in the allow-list"
    found = pydoc.locate(target)
    defined_in = getattr(found, "__module__", None) or ""
    if prefix == "!module:" or not defined_in.startswith(ALLOWED_MODULES):
        return f"{target} is not a class or function defined in the allow-list"
    return None
