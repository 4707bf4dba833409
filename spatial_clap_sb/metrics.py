"""Evaluation metrics of Spatial-CLAP.

* Retrieval (:func:`retrieval_metrics`): text-to-audio and audio-to-text recall at
  1/5/10 and audio-to-text mAP@10, with several captions per audio (LAION-CLAP / Clotho
  style).
* Assignment (:func:`assignment_accuracy`, :func:`assignment_accuracy_from_embeddings`):
  does a scene's audio embedding prefer its true caption over every caption with the
  source-to-direction assignment permuted?
* Direction (:func:`direction_accuracy`): zero-shot direction classification against
  direction prompts; (:func:`direction_probe_accuracy`): a linear probe on frozen
  embeddings.

Inputs are NumPy arrays or torch tensors (converted to NumPy); outputs are Python
floats or NumPy arrays. Embeddings are expected L2-normalised by the caller; scores are
plain dot products.

Tie policy
----------
Ranking metrics are **pessimistic about ties**: a relevant item whose score equals that
of an irrelevant item is ranked *behind* it (:func:`similarity_ranks`). A model that
gives every candidate the same score therefore gets chance-or-worse recall, never a
perfect one. Likewise :func:`assignment_accuracy` counts a tie with a permuted caption
as a failure. :func:`direction_accuracy` uses ``argmax`` (a tie goes to the lowest zone
index), see its docstring.
"""
import numpy as np
import torch

__all__ = [
    "similarity_ranks",
    "retrieval_metrics",
    "assignment_accuracy",
    "assignment_accuracy_from_embeddings",
    "direction_accuracy",
    "direction_probe_accuracy",
]


def _to_numpy(x, dtype=None):
    """Converts a torch tensor (any device/dtype) or array-like to a NumPy array."""
    if torch.is_tensor(x):
        x = x.detach().cpu()
        if x.is_floating_point() and x.dtype not in (torch.float32, torch.float64):
            x = x.float()
        x = x.numpy()
    x = np.asarray(x)
    if dtype is not None:
        x = x.astype(dtype, copy=False)
    return x


def _check_2d(name, x):
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D [N, D]; got shape {x.shape}")


def similarity_ranks(scores, positives):
    """1-based rank of every candidate for every query, ties broken pessimistically.

    Candidates are ordered by decreasing score. Among candidates with **equal** scores,
    irrelevant ones come first and relevant ones after (pessimistic policy: a ground
    truth tied with a wrong item ranks behind it); remaining ties keep the candidates'
    index order. The result is a total order, so every candidate gets a distinct rank.

    Arguments
    ---------
    scores : array-like
        ``[Q, C]`` similarity of each query to each candidate (finite).
    positives : array-like
        Either ``[Q, C]`` bool, True where the candidate is relevant to the query, or
        ``[Q]`` int, the index of the single relevant candidate of each query.

    Returns
    -------
    numpy.ndarray
        ``[Q, C]`` int, the rank (1 = best) of each candidate for each query.

    Example
    -------
    >>> scores = np.array([[0.5, 0.5, 0.1]])
    >>> similarity_ranks(scores, np.array([0]))  # the tie puts the truth second
    array([[2, 1, 3]])
    >>> similarity_ranks(scores, np.array([[True, True, False]]))
    array([[1, 2, 3]])
    """
    scores = _to_numpy(scores, np.float64)
    _check_2d("scores", scores)
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinite values")
    n_query, n_cand = scores.shape
    positives = _to_numpy(positives)
    if positives.ndim == 1:
        if positives.shape[0] != n_query:
            raise ValueError(
                f"positives [Q] must have Q={n_query} entries; got {positives.shape}"
            )
        index = positives.astype(np.int64)
        if ((index < 0) | (index >= n_cand)).any():
            raise ValueError(f"positive indices must lie in [0, {n_cand})")
        mask = np.zeros((n_query, n_cand), dtype=bool)
        mask[np.arange(n_query), index] = True
    else:
        mask = positives.astype(bool)
        if mask.shape != scores.shape:
            raise ValueError(
                f"positives mask must have the shape of scores {scores.shape}; "
                f"got {mask.shape}"
            )
    # lexsort: last key is primary. Decreasing score, then irrelevant (0) before
    # relevant (1), then (stable) index order.
    order = np.lexsort((mask.astype(np.int8), -scores), axis=-1)
    ranks = np.empty((n_query, n_cand), dtype=np.int64)
    np.put_along_axis(
        ranks, order, np.broadcast_to(np.arange(1, n_cand + 1), order.shape), axis=-1
    )
    return ranks


def retrieval_metrics(audio_emb, text_emb, text_audio_index):
    """Text-to-audio and audio-to-text retrieval metrics with several captions per audio.

    Scores are dot products ``audio_emb @ text_emb.T``; ties are broken pessimistically
    (:func:`similarity_ranks`).

    * ``t2a_R@k``: share of captions whose audio is among the top ``k`` audios.
    * ``a2t_R@k``: share of audios with **any** of their captions among the top ``k``
      captions.
    * ``mAP@10``: audio-to-text mean average precision at 10 (LAION-CLAP / Clotho): for
      each audio, ``AP@10 = sum(precision@r for each relevant caption at rank r <= 10)
      / min(n_relevant, 10)``, averaged over audios.

    Audios without any caption take part as distractors in text-to-audio retrieval but
    are left out of the audio-to-text metrics.

    Arguments
    ---------
    audio_emb : array-like
        ``[N, D]`` L2-normalised audio embeddings.
    text_emb : array-like
        ``[M, D]`` L2-normalised caption embeddings.
    text_audio_index : array-like
        ``[M]`` int, the row of ``audio_emb`` that each caption describes.

    Returns
    -------
    dict
        Keys ``t2a_R@1``, ``t2a_R@5``, ``t2a_R@10``, ``a2t_R@1``, ``a2t_R@5``,
        ``a2t_R@10``, ``mAP@10``; values are Python floats in [0, 1].

    Example
    -------
    >>> audio = np.eye(3)
    >>> text = np.eye(3)[[0, 0, 1, 2]]  # two captions for audio 0
    >>> m = retrieval_metrics(audio, text, [0, 0, 1, 2])
    >>> m["t2a_R@1"], m["a2t_R@1"], m["mAP@10"]
    (1.0, 1.0, 1.0)
    """
    audio = _to_numpy(audio_emb, np.float64)
    text = _to_numpy(text_emb, np.float64)
    _check_2d("audio_emb", audio)
    _check_2d("text_emb", text)
    if audio.shape[1] != text.shape[1]:
        raise ValueError(
            f"embedding sizes differ: audio {audio.shape[1]}, text {text.shape[1]}"
        )
    index = _to_numpy(text_audio_index).astype(np.int64).reshape(-1)
    n_audio, n_text = audio.shape[0], text.shape[0]
    if index.shape[0] != n_text:
        raise ValueError(
            f"text_audio_index must have one entry per caption ({n_text}); "
            f"got {index.shape[0]}"
        )
    if n_audio == 0 or n_text == 0:
        raise ValueError("retrieval_metrics needs at least one audio and one caption")
    if ((index < 0) | (index >= n_audio)).any():
        raise ValueError(f"text_audio_index must lie in [0, {n_audio})")

    scores = audio @ text.T  # [N, M]
    metrics = {}

    # text -> audio: one relevant audio per caption
    t2a_ranks = similarity_ranks(scores.T, index)
    t2a_rank = t2a_ranks[np.arange(n_text), index]
    for k in (1, 5, 10):
        metrics[f"t2a_R@{k}"] = float(np.mean(t2a_rank <= k))

    # audio -> text: the captions of each audio are relevant
    relevant = index[None, :] == np.arange(n_audio)[:, None]  # [N, M]
    has_caption = relevant.any(axis=1)
    a2t_ranks = similarity_ranks(scores[has_caption], relevant[has_caption])
    rel = relevant[has_caption]
    best = np.where(rel, a2t_ranks, np.iinfo(np.int64).max).min(axis=1)
    for k in (1, 5, 10):
        metrics[f"a2t_R@{k}"] = float(np.mean(best <= k))

    # mAP@10: precision at the rank of each relevant caption within the top 10
    rel_ranks = np.where(rel, a2t_ranks, np.iinfo(np.int64).max)
    rel_ranks.sort(axis=1)  # the j-th relevant caption (0-based) sits at rel_ranks[:, j]
    hits = np.arange(1, n_text + 1)[None, :]  # number of relevant items up to there
    in_top = rel_ranks <= 10
    precision = np.where(in_top, hits / np.where(in_top, rel_ranks, 1), 0.0)
    n_rel = rel.sum(axis=1)
    ap = precision.sum(axis=1) / np.minimum(n_rel, 10)
    metrics["mAP@10"] = float(np.mean(ap))
    return {key: metrics[key] for key in _RETRIEVAL_KEYS}


_RETRIEVAL_KEYS = (
    "t2a_R@1",
    "t2a_R@5",
    "t2a_R@10",
    "a2t_R@1",
    "a2t_R@5",
    "a2t_R@10",
    "mAP@10",
)


def assignment_accuracy(true_scores, permuted_scores, mask=None):
    """Share of scenes whose true caption beats every permuted-assignment caption.

    A scene counts as correct when its true-caption score is **strictly** above the
    score of every valid permuted caption (a tie is a failure). Scenes without any valid
    permuted caption (single-source scenes) are left out; when no scene has one the
    result is ``nan``.

    Arguments
    ---------
    true_scores : array-like
        ``[N]`` score of each scene's audio against its true caption.
    permuted_scores : array-like
        ``[N, P]`` scores against the captions with the directions permuted.
    mask : array-like, optional
        ``[N, P]`` bool, True where the permuted caption is real (default: all real).

    Returns
    -------
    float
        Accuracy in [0, 1], or ``nan`` when no scene has a permuted caption.

    Example
    -------
    >>> true = np.array([0.9, 0.5, 0.7])
    >>> perm = np.array([[0.1, 0.2], [0.5, 0.0], [0.8, 0.0]])
    >>> assignment_accuracy(true, perm)  # scene 1 ties, scene 2 loses
    0.3333333333333333
    >>> assignment_accuracy(true, perm, mask=np.array([[1, 1], [1, 1], [0, 1]]))
    0.6666666666666666
    """
    true_scores = _to_numpy(true_scores, np.float64).reshape(-1)
    permuted = _to_numpy(permuted_scores, np.float64)
    if permuted.ndim == 1:
        permuted = permuted[:, None]
    _check_2d("permuted_scores", permuted)
    if permuted.shape[0] != true_scores.shape[0]:
        raise ValueError(
            f"permuted_scores has {permuted.shape[0]} rows for "
            f"{true_scores.shape[0]} scenes"
        )
    if mask is None:
        mask = np.ones(permuted.shape, dtype=bool)
    else:
        mask = _to_numpy(mask).astype(bool)
        if mask.shape != permuted.shape:
            raise ValueError(
                f"mask must have the shape of permuted_scores {permuted.shape}; "
                f"got {mask.shape}"
            )
    has_negative = mask.any(axis=1)
    if not has_negative.any():
        return float("nan")
    beats = (true_scores[:, None] > permuted) | ~mask
    correct = beats.all(axis=1)[has_negative]
    return float(np.mean(correct))


def assignment_accuracy_from_embeddings(
    audio_emb, true_text_emb, permuted_text_emb, mask=None
):
    """:func:`assignment_accuracy` from embeddings (scores are dot products).

    Arguments
    ---------
    audio_emb : array-like
        ``[N, D]`` L2-normalised audio embeddings.
    true_text_emb : array-like
        ``[N, D]`` embeddings of each scene's true caption.
    permuted_text_emb : array-like
        ``[N, P, D]`` embeddings of the captions with the directions permuted.
    mask : array-like, optional
        ``[N, P]`` bool, True where the permuted caption is real.

    Returns
    -------
    float
        Accuracy in [0, 1] (``nan`` when no scene has a permuted caption).

    Example
    -------
    >>> a = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> perm = np.array([[[0.0, 1.0]], [[0.0, 1.0]]])
    >>> assignment_accuracy_from_embeddings(a, a, perm)  # scene 1 ties its permutation
    0.5
    """
    audio = _to_numpy(audio_emb, np.float64)
    true_text = _to_numpy(true_text_emb, np.float64)
    permuted = _to_numpy(permuted_text_emb, np.float64)
    _check_2d("audio_emb", audio)
    if true_text.shape != audio.shape:
        raise ValueError(
            f"true_text_emb must have the shape of audio_emb {audio.shape}; "
            f"got {true_text.shape}"
        )
    if permuted.ndim != 3 or permuted.shape[0] != audio.shape[0]:
        raise ValueError(
            f"permuted_text_emb must be [N, P, D] with N={audio.shape[0]}; "
            f"got {permuted.shape}"
        )
    true_scores = np.einsum("nd,nd->n", audio, true_text)
    permuted_scores = np.einsum("nd,npd->np", audio, permuted)
    return assignment_accuracy(true_scores, permuted_scores, mask)


def direction_accuracy(audio_emb, prompt_emb, zone_index):
    """Zero-shot direction classification against one prompt embedding per zone.

    The predicted zone is ``argmax(audio_emb @ prompt_emb.T)``; an exact tie goes to
    the **lowest** zone index (NumPy's ``argmax``), which is optimistic only in the
    degenerate case of tied prompts.

    Arguments
    ---------
    audio_emb : array-like
        ``[N, D]`` L2-normalised audio embeddings (typically single-source scenes).
    prompt_emb : array-like
        ``[Z, D]`` L2-normalised embeddings of the direction prompts.
    zone_index : array-like
        ``[N]`` int, the true zone of each scene, in ``[0, Z)``.

    Returns
    -------
    accuracy : float
        Share of scenes whose predicted zone is the true one.
    confusion : numpy.ndarray
        ``[Z, Z]`` int counts; rows are true zones, columns predicted zones.

    Example
    -------
    >>> prompts = np.eye(3)
    >>> audio = np.array([[1.0, 0.0, 0.0], [0.0, 0.9, 0.1], [0.0, 0.8, 0.2]])
    >>> acc, confusion = direction_accuracy(audio, prompts, [0, 1, 2])
    >>> acc
    0.6666666666666666
    >>> confusion.tolist()
    [[1, 0, 0], [0, 1, 0], [0, 1, 0]]
    """
    audio = _to_numpy(audio_emb, np.float64)
    prompts = _to_numpy(prompt_emb, np.float64)
    _check_2d("audio_emb", audio)
    _check_2d("prompt_emb", prompts)
    zones = _to_numpy(zone_index).astype(np.int64).reshape(-1)
    n_zones = prompts.shape[0]
    if zones.shape[0] != audio.shape[0]:
        raise ValueError(
            f"zone_index must have one entry per scene ({audio.shape[0]}); "
            f"got {zones.shape[0]}"
        )
    if audio.shape[0] == 0:
        raise ValueError("direction_accuracy needs at least one scene")
    if ((zones < 0) | (zones >= n_zones)).any():
        raise ValueError(f"zone_index must lie in [0, {n_zones})")
    predicted = np.argmax(audio @ prompts.T, axis=1)
    confusion = np.zeros((n_zones, n_zones), dtype=np.int64)
    np.add.at(confusion, (zones, predicted), 1)
    return float(np.mean(predicted == zones)), confusion


def direction_probe_accuracy(
    train_emb, train_zone, test_emb, test_zone, n_zones, l2=1e-3, seed=0
):
    """Accuracy of a linear direction probe trained on frozen embeddings.

    Fits a multinomial logistic regression (softmax over ``n_zones``) on ``train_emb``
    and scores it on ``test_emb``. Features are standardised with the training set's
    mean and standard deviation. The fit minimises
    ``mean cross-entropy + 0.5 * l2 * ||W||^2`` (bias not penalised) with full-batch
    L-BFGS (strong-Wolfe line search) in float64 on the CPU, starting from small
    weights drawn from a generator seeded with ``seed``: the result is deterministic.

    Arguments
    ---------
    train_emb : array-like
        ``[N_train, D]`` embeddings to fit on.
    train_zone : array-like
        ``[N_train]`` int zone labels in ``[0, n_zones)``.
    test_emb : array-like
        ``[N_test, D]`` embeddings to score.
    test_zone : array-like
        ``[N_test]`` int zone labels.
    n_zones : int
        Number of classes.
    l2 : float
        Weight-decay strength (default 1e-3).
    seed : int
        Seed of the weight initialisation.

    Returns
    -------
    float
        Test accuracy in [0, 1] (an argmax tie goes to the lowest zone index).

    Example
    -------
    >>> x = np.array([[-2.0], [-1.0], [1.0], [2.0]])
    >>> direction_probe_accuracy(x, [0, 0, 1, 1], x[::-1], [1, 1, 0, 0], n_zones=2)
    1.0
    """
    x_train = torch.from_numpy(np.ascontiguousarray(_to_numpy(train_emb, np.float64)))
    x_test = torch.from_numpy(np.ascontiguousarray(_to_numpy(test_emb, np.float64)))
    y_train = torch.from_numpy(_to_numpy(train_zone).astype(np.int64).reshape(-1))
    y_test = torch.from_numpy(_to_numpy(test_zone).astype(np.int64).reshape(-1))
    if x_train.dim() != 2 or x_test.dim() != 2 or x_train.shape[1] != x_test.shape[1]:
        raise ValueError(
            f"train_emb and test_emb must be [N, D] with the same D; got "
            f"{tuple(x_train.shape)} and {tuple(x_test.shape)}"
        )
    if y_train.shape[0] != x_train.shape[0] or y_test.shape[0] != x_test.shape[0]:
        raise ValueError("each embedding needs exactly one zone label")
    if x_train.shape[0] == 0 or x_test.shape[0] == 0:
        raise ValueError("direction_probe_accuracy needs non-empty train and test sets")
    for name, y in (("train_zone", y_train), ("test_zone", y_test)):
        if bool(((y < 0) | (y >= n_zones)).any()):
            raise ValueError(f"{name} must lie in [0, {n_zones})")

    mean = x_train.mean(dim=0)
    std = x_train.std(dim=0, unbiased=False)
    std = torch.where(std > 1e-12, std, torch.ones_like(std))
    x_train = (x_train - mean) / std
    x_test = (x_test - mean) / std

    generator = torch.Generator().manual_seed(int(seed))
    shape = (x_train.shape[1], n_zones)
    weight = 0.01 * torch.randn(shape, generator=generator, dtype=torch.float64)
    weight.requires_grad_()
    bias = torch.zeros(n_zones, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=500,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure():
        optimizer.zero_grad()
        logits = x_train @ weight + bias
        loss = torch.nn.functional.cross_entropy(logits, y_train)
        loss = loss + 0.5 * l2 * (weight * weight).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        predicted = (x_test @ weight + bias).argmax(dim=1)
    return float((predicted == y_test).double().mean().item())
