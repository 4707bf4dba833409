"""Scene-level evaluation: collects audio embeddings and scores them with ``metrics``.

The same code serves the recipe's validation, its test sets, ``evaluate.py`` and the
inference interface, so a figure means the same thing everywhere:

- retrieval R@1/5/10 both ways and mAP@10, with every caption phrasing of a scene as one
  of its captions;
- ``assignment_acc`` over scenes with several sources: the true caption must score
  above every permuted-assignment caption;
- ``direction_acc`` over one-source scenes: zero-shot over the zone vocabulary's
  direction prompts, in the language of the scenes' captions (the template prompt per
  zone; for held-out language, the mean embedding of every held-out prompt of a zone).

:func:`direction_probe` adds ``direction_probe_acc``: a linear probe fitted on the
one-source scenes of another set (the recipe's validation set) reads the zone from the
audio embeddings alone.

An exported model on a scene manifest (``spatial-clap evaluate`` and
``recipes/SpatialCLAP/evaluate.py``): :func:`evaluate_manifest` turns the manifest into
a dataset with :func:`~spatial_clap_sb.data.pipelines.scene_dataset` (the recipe's own
pipeline: same captions, same permuted-assignment negatives, same zone labels), embeds
the audio with the inference interface
(:meth:`~spatial_clap_sb.inference.SpatialCLAP.encode_signals`, so a scene gets the
embedding that ``encode_files`` gives its file), scores it with :func:`scene_metrics`
and writes ``metrics.json`` and PNG plots.

Example
-------
>>> from spatial_clap_sb.inference import SpatialCLAP
>>> model = SpatialCLAP.from_hparams(source="results/spatial_clap/1234/model")
...  # doctest: +SKIP
>>> metrics = evaluate_manifest(model, "data/generated/manifests/test_2src.json",
...                             data_root="data/generated", output_dir="eval")
...  # doctest: +SKIP
>>> sorted(metrics)[:3]  # doctest: +SKIP
['a2t_R@1', 'a2t_R@10', 'a2t_R@5']
"""
import logging
import os
from types import SimpleNamespace

import numpy as np
import torch

from spatial_clap_sb.files import atomic_write_json
from spatial_clap_sb.language import ZoneVocabulary, direction_prompt_sets
from spatial_clap_sb.metrics import (
    assignment_accuracy,
    direction_accuracy,
    direction_probe_accuracy,
    retrieval_metrics,
)

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
SIMILARITY_PLOT = "similarity_matrix.png"
CONFUSION_PLOT = "direction_confusion.png"


class SceneEmbeddings:
    """Accumulates audio embeddings and the text side of each scene, batch by batch."""

    def __init__(self):
        self.audio, self.ids, self.captions, self.permuted = [], [], [], []
        self.zone_index, self.n_sources, self.language = [], [], []

    def append(self, batch, audio_emb):
        """Adds a batch (with ``id``, ``captions``, ``permuted``, ``zone_index``,
        ``n_sources`` and ``language`` as the scene pipeline gives them) and its
        ``[B, D]`` embeddings."""
        self.audio.append(audio_emb.detach().float().cpu())
        self.ids.extend(batch.id)
        self.captions.extend(list(c) for c in batch.captions)
        self.permuted.extend(list(p) for p in batch.permuted)
        self.zone_index.extend(_as_list(batch.zone_index))
        self.n_sources.extend(_as_list(batch.n_sources))
        self.language.extend(getattr(batch, "language", None)
                             or ["template"] * len(batch.id))

    def __len__(self):
        return len(self.ids)

    def with_text_of(self, dataset):
        """The same audio embeddings with the text side of another dataset of the same
        scenes (e.g. a test set's held-out-language twin): no audio is read again.

        Arguments
        ---------
        dataset : DynamicItemDataset
            A scene dataset whose ids are these scenes', in the same order.

        Returns
        -------
        SceneEmbeddings
        """
        keys = ["id", "captions", "permuted", "zone_index", "n_sources", "language"]
        with dataset.output_keys_as(keys):
            items = [dataset[i] for i in range(len(dataset))]
        if [item["id"] for item in items] != self.ids:
            raise ValueError("with_text_of needs a dataset of the same scenes in the "
                             "same order.")
        twin = SceneEmbeddings()
        twin.audio, twin.ids = list(self.audio), list(self.ids)
        twin.captions = [list(item["captions"]) for item in items]
        twin.permuted = [list(item["permuted"]) for item in items]
        twin.zone_index = [int(item["zone_index"]) for item in items]
        twin.n_sources = [int(item["n_sources"]) for item in items]
        twin.language = [item["language"] for item in items]
        return twin

    def audio_matrix(self):
        """``[N, D]`` float32 numpy array of all embeddings so far."""
        return torch.cat(self.audio).numpy() if self.audio else np.zeros((0, 0), "float32")


def _as_list(values):
    data = getattr(values, "data", values)
    return [int(v) for v in (data.tolist() if torch.is_tensor(data) else data)]


def encode_in_batches(encode_text, captions, batch_size=256):
    """Encodes captions with ``encode_text(list) -> [B, D]`` tensor, batch by batch."""
    chunks = []
    with torch.no_grad():
        for start in range(0, len(captions), batch_size):
            chunks.append(encode_text(captions[start:start + batch_size]).float().cpu())
    return torch.cat(chunks).numpy()


def scene_metrics(scenes, encode_text, zones=None):
    """All metrics of a set of scenes.

    Arguments
    ---------
    scenes : SceneEmbeddings
        The collected audio embeddings and captions.
    encode_text : callable
        ``encode_text(list of str) -> [B, D]`` unit-norm text embeddings.
    zones : ZoneVocabulary or list of dict, optional
        Vocabulary of the direction prompts.

    Returns
    -------
    dict
        ``t2a_R@1/5/10``, ``a2t_R@1/5/10``, ``mAP@10``; ``assignment_acc`` when some
        scene has permuted captions; ``direction_acc`` and ``direction_confusion`` when
        some scene has a single source; ``n_scenes``.
    """
    zones = ZoneVocabulary.from_config(zones)
    audio = scenes.audio_matrix()
    flat_captions = [c for caps in scenes.captions for c in caps]
    owner = np.repeat(np.arange(len(scenes)), [len(c) for c in scenes.captions])
    text = encode_in_batches(encode_text, flat_captions)
    results = retrieval_metrics(audio, text, owner)
    results["n_scenes"] = len(scenes)
    with_negatives = [i for i, p in enumerate(scenes.permuted) if p]
    if with_negatives:
        results["assignment_acc"] = _assignment(scenes, audio, with_negatives, encode_text)
    single = [i for i, z in enumerate(scenes.zone_index) if z >= 0]
    if single:
        prompts = zone_prompt_embeddings(encode_text, zones,
                                         "heldout" if "heldout" in scenes.language
                                         else "template")
        accuracy, confusion = direction_accuracy(
            audio[single], prompts, np.asarray(scenes.zone_index)[single])
        results["direction_acc"] = accuracy
        results["direction_confusion"] = confusion.tolist()
    return results


def zone_prompt_embeddings(encode_text, zones=None, language="template"):
    """One unit-norm prompt embedding per zone: the mean of its prompts' embeddings.

    Arguments
    ---------
    encode_text : callable
        ``encode_text(list of str) -> [B, D]`` unit-norm text embeddings.
    zones : ZoneVocabulary or list of dict, optional
    language : str
        ``"template"`` (one prompt per zone) or ``"heldout"`` (every held-out prompt
        form with every held-out wording of the zone).

    Returns
    -------
    numpy.ndarray
        ``[n_zones, D]``, left to right.
    """
    prompt_sets = direction_prompt_sets(zones, language)
    flat = [prompt for prompts in prompt_sets for prompt in prompts]
    embedded = encode_in_batches(encode_text, flat)
    owner = np.repeat(np.arange(len(prompt_sets)), [len(p) for p in prompt_sets])
    means = np.stack([embedded[owner == z].mean(0) for z in range(len(prompt_sets))])
    return means / np.linalg.norm(means, axis=1, keepdims=True)


def _assignment(scenes, audio, rows, encode_text):
    """Share of scenes whose true caption (phrasing 0) beats all its permutations."""
    true_text = encode_in_batches(encode_text, [scenes.captions[i][0] for i in rows])
    n_perm = max(len(scenes.permuted[i]) for i in rows)
    flat = [c for i in rows for c in scenes.permuted[i]]
    perm_text = encode_in_batches(encode_text, flat)
    permuted_scores = np.full((len(rows), n_perm), -np.inf, dtype=np.float64)
    mask = np.zeros((len(rows), n_perm), dtype=bool)
    start = 0
    for r, i in enumerate(rows):
        count = len(scenes.permuted[i])
        permuted_scores[r, :count] = perm_text[start:start + count] @ audio[i]
        mask[r, :count] = True
        start += count
    true_scores = np.einsum("nd,nd->n", true_text, audio[rows])
    return assignment_accuracy(true_scores, permuted_scores, mask)


def direction_probe(fit, test, n_zones):
    """Accuracy of a linear direction probe on audio embeddings alone.

    Arguments
    ---------
    fit, test : SceneEmbeddings
        The probe is fitted on the one-source scenes of ``fit`` and scored on those of
        ``test`` (scenes with several sources are left out of both).
    n_zones : int
        Number of zones.

    Returns
    -------
    float or None
        None when either set has no one-source scene.
    """
    fit_rows = [i for i, zone in enumerate(fit.zone_index) if zone >= 0]
    test_rows = [i for i, zone in enumerate(test.zone_index) if zone >= 0]
    if not fit_rows or not test_rows:
        return None
    return direction_probe_accuracy(
        fit.audio_matrix()[fit_rows], [fit.zone_index[i] for i in fit_rows],
        test.audio_matrix()[test_rows], [test.zone_index[i] for i in test_rows],
        n_zones=n_zones)


# ------------------------------------------------- an exported model on a manifest


def embed_scenes(model, dataset, batch_size=8, progress=False):
    """Embeds every scene of a scene dataset with the inference interface.

    Arguments
    ---------
    model : spatial_clap_sb.inference.SpatialCLAP
        The loaded model.
    dataset : speechbrain.dataio.dataset.DynamicItemDataset
        From :func:`~spatial_clap_sb.data.pipelines.scene_dataset` (keys ``id``,
        ``sig``, ``captions``, ``permuted``, ``zone_index``, ``n_sources``).
    batch_size : int
        Scenes read and embedded per step.
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    spatial_clap_sb.evaluation.SceneEmbeddings
        In manifest order.
    """
    scenes = SceneEmbeddings()
    n_items = len(dataset)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n_items, desc="Evaluating", unit="scene")
    try:
        for start in range(0, n_items, batch_size):
            items = [dataset[i] for i in range(start, min(start + batch_size, n_items))]
            audio = model.encode_signals([item["sig"] for item in items],
                                         batch_size=batch_size)
            batch = SimpleNamespace(**{key: [item[key] for item in items] for key in
                                       ("id", "captions", "permuted", "zone_index",
                                        "n_sources")})
            scenes.append(batch, audio)
            if bar is not None:
                bar.update(len(items))
    finally:
        if bar is not None:
            bar.close()
    return scenes


def plot_scene_similarity(model, scenes, path, n_scenes=8):
    """Similarity of the first scenes with their captions and permuted captions.

    Rows are the first ``n_scenes`` scenes; columns are, scene by scene, its caption
    (phrasing 0, outlined in red) followed by its permuted-assignment captions (marked
    ``[perm]``). A model that binds content to direction shows bright outlined cells
    and darker cells for their permutations.

    Arguments
    ---------
    model : spatial_clap_sb.inference.SpatialCLAP
        Encodes the captions.
    scenes : spatial_clap_sb.evaluation.SceneEmbeddings
        Embedded scenes (from :func:`embed_scenes`).
    path : str
        Output PNG.
    n_scenes : int
        How many scenes (rows).

    Returns
    -------
    str
        ``path``.
    """
    from spatial_clap_sb.plots import plot_similarity_matrix

    rows = list(range(min(n_scenes, len(scenes))))
    if not rows:
        raise ValueError("No scene to plot.")
    captions, labels, true_cells = [], [], []
    for i in rows:
        true_cells.append((i, len(captions)))
        captions.append(scenes.captions[i][0])
        labels.append(scenes.captions[i][0])
        for caption in scenes.permuted[i]:
            captions.append(caption)
            labels.append(f"[perm] {caption}")
    audio = scenes.audio_matrix()[rows]
    scores = model.similarity(audio, model.encode_text(captions)).cpu().numpy()
    return plot_similarity_matrix(
        scores, [scenes.ids[i] for i in rows], labels, path,
        "Scenes vs their captions (red) and permuted captions", highlight=true_cells)


def evaluate_manifest(model, manifest, data_root=None, output_dir=None, batch_size=8,
                      n_plot=8, progress=False, probe_manifest=None):
    """Metrics of a model on a scene manifest, with ``metrics.json`` and PNG plots.

    Arguments
    ---------
    model : spatial_clap_sb.inference.SpatialCLAP
        The loaded model; its ``sample_rate`` and zone vocabulary are used.
    manifest : str
        SpeechBrain JSON scene manifest (``wav``, ``caption`` and, for the spatial
        metrics, ``sources`` with ``caption`` and ``zone``).
    data_root : str, optional
        Replaces ``{data_root}`` in the ``wav`` paths (default: the manifest's folder).
    output_dir : str, optional
        Where to write ``metrics.json``, ``similarity_matrix.png`` and, when the
        manifest has one-source scenes, ``direction_confusion.png``; nothing is written
        when None.
    batch_size : int
        Scenes embedded per step.
    n_plot : int
        Scenes in the similarity-matrix plot.
    progress : bool
        Show a tqdm progress bar.
    probe_manifest : str, optional
        A manifest of other scenes (the recipe's ``valid.json``, say; same
        ``data_root``) whose one-source scenes fit a linear direction probe on the audio
        embeddings: adds ``direction_probe_acc``, as the recipe reports it
        (:func:`spatial_clap_sb.evaluation.direction_probe`).

    Returns
    -------
    dict
        The metrics of :func:`spatial_clap_sb.evaluation.scene_metrics`.
    """
    from spatial_clap_sb.plots import plot_confusion_matrix

    if data_root is None:
        data_root = os.path.dirname(os.path.abspath(manifest))
    scenes = _embed_manifest(model, manifest, data_root, batch_size, progress)
    metrics = scene_metrics(scenes, model.encode_text, zones=model.zones)
    if probe_manifest is not None:
        fit = _embed_manifest(model, probe_manifest, data_root, batch_size, progress)
        accuracy = direction_probe(fit, scenes, len(model.zones))
        if accuracy is None:
            raise ValueError(f"The direction probe needs one-source scenes in both "
                             f"{probe_manifest} and {manifest}.")
        metrics["direction_probe_acc"] = accuracy
    metrics = {key: _plain(value) for key, value in metrics.items()}
    if output_dir is not None:
        atomic_write_json(os.path.join(output_dir, METRICS_FILE), metrics)
        plot_scene_similarity(model, scenes, os.path.join(output_dir, SIMILARITY_PLOT),
                              n_scenes=n_plot)
        if "direction_confusion" in metrics:
            plot_confusion_matrix(metrics["direction_confusion"], model.zone_names,
                                  os.path.join(output_dir, CONFUSION_PLOT))
        logger.info("Wrote the metrics and plots of %s to %s", manifest, output_dir)
    return metrics


def _embed_manifest(model, manifest, data_root, batch_size, progress):
    """The scenes of a manifest, embedded (errors name the manifest)."""
    from spatial_clap_sb.data.pipelines import scene_dataset

    if not os.path.isfile(manifest):
        raise FileNotFoundError(f"Manifest not found: {manifest}")
    dataset = scene_dataset(manifest, data_root, model.sample_rate,
                            zones=model.zones.to_config())
    if len(dataset) == 0:
        raise ValueError(f"Manifest {manifest} holds no scene.")
    return embed_scenes(model, dataset, batch_size=batch_size, progress=progress)


def _plain(value):
    """NumPy scalars and arrays as Python numbers and lists (for JSON)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
