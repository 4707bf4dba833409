"""PNG figures of an evaluation: similarity matrices and the direction confusion matrix.

Figures are drawn on a bare :class:`matplotlib.figure.Figure` (Agg canvas): no pyplot,
no global backend switch, no window, so this works on a headless machine and inside a
program that uses another matplotlib backend.

Example
-------
>>> import os, tempfile
>>> folder = tempfile.mkdtemp()
>>> plot_similarity_matrix(np.eye(2), ["a.wav", "b.wav"], ["dog left", "dog right"],
...                        os.path.join(folder, "sim.png"), "Similarity")[-7:]
'sim.png'
>>> plot_confusion_matrix([[3, 1], [0, 4]], ["left", "right"],
...                       os.path.join(folder, "confusion.png"))[-13:]
'confusion.png'
"""
import os

import numpy as np
from matplotlib.figure import Figure

__all__ = ["plot_similarity_matrix", "plot_confusion_matrix"]

MAX_LABEL = 60  # characters of a tick label before it is shortened
MAX_ANNOTATED_CELLS = 400  # cells beyond which the values are not written in the cells


def _shorten(label, limit=MAX_LABEL):
    label = str(label)
    return label if len(label) <= limit else label[:limit - 3] + "..."


def _as_matrix(values, name):
    if hasattr(values, "detach"):  # torch tensor
        values = values.detach().cpu().numpy()
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix, got shape {values.shape}")
    return values


def _save(fig, path):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fig.savefig(path, format="png", dpi=100, bbox_inches="tight")
    return os.fspath(path)


def plot_similarity_matrix(scores, row_labels, col_labels, path, title=None,
                           highlight=None):
    """Draws a similarity matrix (audio rows, caption columns) as a PNG heat map.

    Arguments
    ---------
    scores : array-like
        ``[n_rows, n_cols]`` similarities (e.g. cosine similarity of audio and text).
    row_labels : list of str
        One label per row (e.g. scene ids).
    col_labels : list of str
        One label per column (e.g. captions; long ones are shortened).
    path : str
        Output ``.png`` file (parent folders are created).
    title : str, optional
        Figure title.
    highlight : list of (int, int), optional
        ``(row, column)`` cells to outline in red (e.g. each audio's true caption).

    Returns
    -------
    str
        ``path``.
    """
    from matplotlib.patches import Rectangle

    scores = _as_matrix(scores, "scores")
    n_rows, n_cols = scores.shape
    if len(row_labels) != n_rows or len(col_labels) != n_cols:
        raise ValueError(f"scores is {n_rows} x {n_cols} but there are {len(row_labels)} "
                         f"row labels and {len(col_labels)} column labels")
    fig = Figure(figsize=(max(6.0, 0.45 * n_cols + 3.0), max(4.0, 0.45 * n_rows + 3.5)))
    ax = fig.subplots()
    image = ax.imshow(scores, cmap="viridis", aspect="auto")
    fig.colorbar(image, ax=ax, label="cosine similarity")
    ax.set_xticks(range(n_cols))
    ax.set_xticklabels([_shorten(c) for c in col_labels], rotation=90, fontsize=7)
    ax.set_yticks(range(n_rows))
    ax.set_yticklabels([_shorten(r, 30) for r in row_labels], fontsize=7)
    ax.set_xlabel("caption")
    ax.set_ylabel("audio")
    finite = scores[np.isfinite(scores)]
    middle = 0.5 * (finite.min() + finite.max()) if finite.size else 0.0
    # viridis is dark at low values: white text below the middle of the range
    cells = np.ndenumerate(scores) if scores.size <= MAX_ANNOTATED_CELLS else ()
    for (i, j), value in cells:
        ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6,
                color="white" if value < middle else "black")
    for row, col in highlight or ():
        ax.add_patch(Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="red",
                               linewidth=1.5))
    if title:
        ax.set_title(title)
    return _save(fig, path)


def plot_confusion_matrix(confusion, zone_names, path, title="Direction confusion"):
    """Draws a direction confusion matrix (true zone rows, predicted zone columns).

    Cells show the counts; colours are row-normalised (share of each true zone), so
    zones with few examples stay readable.

    Arguments
    ---------
    confusion : array-like
        ``[n_zones, n_zones]`` counts, ``confusion[true, predicted]``.
    zone_names : list of str
        Zone names, left to right.
    path : str
        Output ``.png`` file (parent folders are created).
    title : str
        Figure title.

    Returns
    -------
    str
        ``path``.
    """
    counts = _as_matrix(confusion, "confusion")
    n = len(zone_names)
    if counts.shape != (n, n):
        raise ValueError(f"confusion must be {n} x {n} for {n} zones, got {counts.shape}")
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    fig = Figure(figsize=(max(4.5, 0.8 * n + 2.5), max(4.0, 0.8 * n + 2.0)))
    ax = fig.subplots()
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, label="share of the true zone")
    ax.set_xticks(range(n))
    ax.set_xticklabels(zone_names, rotation=45, ha="right")
    ax.set_yticks(range(n))
    ax.set_yticklabels(zone_names)
    ax.set_xlabel("predicted zone")
    ax.set_ylabel("true zone")
    for (i, j), value in np.ndenumerate(counts):
        ax.text(j, i, f"{int(value)}", ha="center", va="center", fontsize=8,
                color="white" if shares[i, j] > 0.5 else "black")
    total = int(counts.sum())
    accuracy = float(np.trace(counts) / total) if total else float("nan")
    ax.set_title(f"{title} (accuracy {accuracy:.2f}, n={total})" if title else "")
    return _save(fig, path)
