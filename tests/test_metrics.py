"""Tests of spatial_clap_sb.metrics on hand-computed cases."""
import math

import numpy as np
import pytest
import torch

from spatial_clap_sb.metrics import (
    assignment_accuracy,
    assignment_accuracy_from_embeddings,
    direction_accuracy,
    direction_probe_accuracy,
    retrieval_metrics,
    similarity_ranks,
)

KEYS = ["t2a_R@1", "t2a_R@5", "t2a_R@10", "a2t_R@1", "a2t_R@5", "a2t_R@10", "mAP@10"]


# ------------------------------------------------------------------ similarity_ranks


def test_similarity_ranks_pessimistic_ties():
    scores = np.array([[0.3, 0.7, 0.7, 0.7, 0.1]])
    # truth tied with two wrong items: it ranks behind both
    assert similarity_ranks(scores, np.array([2])).tolist() == [[4, 1, 3, 2, 5]]
    # two relevant items tied with one wrong item: both behind it
    mask = np.array([[False, True, False, True, False]])
    ranks = similarity_ranks(scores, mask)
    assert ranks[0, 2] == 1 and sorted(ranks[0, [1, 3]].tolist()) == [2, 3]
    # each row is a permutation of 1..C
    assert sorted(ranks[0].tolist()) == [1, 2, 3, 4, 5]


def test_similarity_ranks_rejects_nan():
    with pytest.raises(ValueError, match="NaN"):
        similarity_ranks(np.array([[0.1, np.nan]]), np.array([0]))


# ------------------------------------------------------------------ retrieval_metrics


def test_perfect_retrieval_gives_all_ones():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(6, 6)) + 5 * np.eye(6)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    metrics = retrieval_metrics(emb, emb, np.arange(6))
    assert list(metrics) == KEYS
    assert all(isinstance(v, float) for v in metrics.values())
    assert metrics == {key: 1.0 for key in KEYS}
    # torch tensors are accepted
    t = torch.from_numpy(emb).float()
    assert retrieval_metrics(t, t, torch.arange(6)) == {key: 1.0 for key in KEYS}


def test_t2a_recall_with_known_ranks():
    # audio embeddings are one-hot, so score(audio a, caption j) = text[j, a]
    n = 12
    audio = np.eye(n)
    true_ranks = [1, 1, 2, 3, 5, 6, 10, 11, 12, 4, 7, 1]
    text = np.full((n, n), 0.1)
    for j, r in enumerate(true_ranks):
        text[j, j] = 0.5
        others = [a for a in range(n) if a != j][: r - 1]
        text[j, others] = 0.9  # r - 1 wrong audios score higher than the truth
    metrics = retrieval_metrics(audio, text, np.arange(n))
    ranks = np.array(true_ranks)
    assert metrics["t2a_R@1"] == pytest.approx(3 / 12)
    assert metrics["t2a_R@5"] == pytest.approx(np.mean(ranks <= 5))  # 7 / 12
    assert metrics["t2a_R@5"] == pytest.approx(7 / 12)
    assert metrics["t2a_R@10"] == pytest.approx(10 / 12)


def test_constant_scores_are_not_rewarded():
    n = 20
    emb = np.tile(np.array([[1.0, 0.0]]), (n, 1))  # every score is identical
    metrics = retrieval_metrics(emb, emb, np.arange(n))
    assert metrics["t2a_R@1"] == 0.0 and metrics["a2t_R@1"] == 0.0
    assert metrics["t2a_R@10"] == 0.0 and metrics["mAP@10"] == 0.0


def test_several_captions_per_audio():
    # 2 audios (one-hot), 4 captions; score(audio a, caption j) = text[j, a]
    audio = np.eye(2)
    text = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]])
    index = np.array([0, 0, 1, 1])
    metrics = retrieval_metrics(audio, text, index)
    # audio 0: caption order c0, c2, c3, c1 -> relevant at ranks 1 and 4
    #   hit at R@1; AP@10 = (1/1 + 2/4) / 2 = 0.75
    # audio 1: caption order c1, c3, c2, c0 -> relevant at ranks 2 and 3
    #   miss at R@1; AP@10 = (1/2 + 2/3) / 2 = 7/12
    assert metrics["a2t_R@1"] == pytest.approx(0.5)
    assert metrics["a2t_R@5"] == pytest.approx(1.0)
    assert metrics["mAP@10"] == pytest.approx((0.75 + 7 / 12) / 2)
    # t2a: c0 -> audio 0 first (hit), c1 -> audio 1 first (miss),
    #      c2 -> audio 0 first (miss), c3 -> audio 1 first (hit)
    assert metrics["t2a_R@1"] == pytest.approx(0.5)
    assert metrics["t2a_R@5"] == pytest.approx(1.0)


def test_map10_denominator_is_capped_at_ten():
    # one audio with 12 relevant captions, all in the top 12: AP@10 = 10 / min(12, 10)
    audio = np.array([[1.0, 0.0]])
    scores = np.linspace(1.0, 0.5, 12)
    text = np.stack([scores, np.zeros(12)], axis=1)
    metrics = retrieval_metrics(audio, text, np.zeros(12, dtype=int))
    assert metrics["mAP@10"] == pytest.approx(1.0)
    # a relevant caption outside the top 10 does not count
    audio2 = np.eye(2)
    text2 = np.zeros((12, 2))
    text2[:11, 1] = 1.0  # 11 captions of audio 1 score high for audio 1 ...
    text2[:11, 0] = np.linspace(0.9, 0.8, 11)  # ... and outrank audio 0's caption
    text2[11] = [0.1, 0.0]
    index2 = np.array([1] * 11 + [0])
    m2 = retrieval_metrics(audio2, text2, index2)
    # audio 0: its single caption ranks 12th -> AP 0; audio 1: 11 relevant, ranks 1..11
    assert m2["a2t_R@10"] == pytest.approx(0.5)
    assert m2["mAP@10"] == pytest.approx((0.0 + 1.0) / 2)


def test_retrieval_metrics_validates_inputs():
    with pytest.raises(ValueError, match="text_audio_index"):
        retrieval_metrics(np.eye(2), np.eye(2), [0, 2])
    with pytest.raises(ValueError, match="one entry per caption"):
        retrieval_metrics(np.eye(2), np.eye(2), [0])


# ---------------------------------------------------------------- assignment_accuracy


def test_assignment_accuracy_ties_fail_and_masks():
    true = np.array([0.9, 0.5, 0.7, 0.6])
    perm = np.array([[0.1, 0.2], [0.5, 0.0], [0.8, 0.0], [0.3, 0.65]])
    # scene 0 wins, scene 1 ties (failure), scene 2 loses, scene 3 loses to 0.65
    assert assignment_accuracy(true, perm) == pytest.approx(1 / 4)
    mask = np.array([[True, True], [True, True], [False, True], [True, False]])
    # with masks: scene 2 only faces 0.0 (win), scene 3 only faces 0.3 (win)
    assert assignment_accuracy(true, perm, mask) == pytest.approx(3 / 4)
    # scenes without any valid permutation are left out of the denominator
    mask_empty = np.array([[True, True], [False, False], [False, False], [True, True]])
    assert assignment_accuracy(true, perm, mask_empty) == pytest.approx(1 / 2)
    assert math.isnan(assignment_accuracy(true, perm, np.zeros((4, 2), dtype=bool)))
    # torch input
    assert assignment_accuracy(torch.tensor(true), torch.tensor(perm)) == pytest.approx(
        1 / 4
    )


def test_assignment_accuracy_from_embeddings():
    audio = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    true_text = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    perm = np.array(
        [
            [[0.0, 1.0], [0.0, 0.0]],  # 1.0 vs 0.0 -> win
            [[0.0, 1.0], [0.0, 0.0]],  # 0.8 vs 1.0 -> loss
            [[0.0, 1.0], [1.0, 0.0]],  # 0.8 vs 0.8 (tie) -> failure unless masked
        ]
    )
    mask = np.array([[True, False], [True, False], [True, True]])
    assert assignment_accuracy_from_embeddings(audio, true_text, perm, mask) == (
        pytest.approx(1 / 3)
    )
    mask2 = np.array([[True, False], [True, False], [False, True]])  # 0.8 vs 0.6
    assert assignment_accuracy_from_embeddings(audio, true_text, perm, mask2) == (
        pytest.approx(2 / 3)
    )


# ------------------------------------------------------------------ direction accuracy


def test_direction_accuracy_and_confusion():
    prompts = np.eye(3)  # zones 0, 1, 2
    audio = np.array(
        [
            [0.9, 0.1, 0.0],  # true 0 -> 0
            [0.2, 0.7, 0.1],  # true 1 -> 1
            [0.1, 0.6, 0.3],  # true 2 -> 1
            [0.5, 0.1, 0.4],  # true 2 -> 0
            [0.0, 0.2, 0.8],  # true 2 -> 2
            [0.5, 0.5, 0.0],  # true 1 -> tie between 0 and 1 -> lowest index: 0
        ]
    )
    zones = np.array([0, 1, 2, 2, 2, 1])
    acc, confusion = direction_accuracy(audio, prompts, zones)
    assert acc == pytest.approx(3 / 6)
    expected = np.array([[1, 0, 0], [1, 1, 0], [1, 1, 1]])
    np.testing.assert_array_equal(confusion, expected)
    assert confusion.sum() == 6 and confusion.shape == (3, 3)
    with pytest.raises(ValueError, match="zone_index"):
        direction_accuracy(audio, prompts, np.array([0, 1, 2, 3, 0, 0]))


# ------------------------------------------------------------------- direction probe


def test_probe_separates_linearly_separable_data():
    rng = np.random.default_rng(0)
    n_zones, dim = 4, 8
    centres = 4.0 * rng.normal(size=(n_zones, dim))

    def sample(n):
        zone = rng.integers(0, n_zones, size=n)
        return centres[zone] + 0.3 * rng.normal(size=(n, dim)), zone

    x_train, y_train = sample(200)
    x_test, y_test = sample(200)
    acc = direction_probe_accuracy(x_train, y_train, x_test, y_test, n_zones)
    assert acc == 1.0
    # deterministic, and torch inputs work
    again = direction_probe_accuracy(
        torch.from_numpy(x_train).float(), torch.from_numpy(y_train),
        torch.from_numpy(x_test).float(), torch.from_numpy(y_test), n_zones,
    )
    assert again == 1.0


def test_probe_is_near_chance_on_random_labels():
    rng = np.random.default_rng(1)
    n_zones, dim = 4, 16
    x_train = rng.normal(size=(400, dim))
    y_train = rng.integers(0, n_zones, size=400)
    x_test = rng.normal(size=(2000, dim))
    y_test = rng.integers(0, n_zones, size=2000)
    acc = direction_probe_accuracy(x_train, y_train, x_test, y_test, n_zones, seed=3)
    assert abs(acc - 1 / n_zones) < 0.06
    assert acc == direction_probe_accuracy(
        x_train, y_train, x_test, y_test, n_zones, seed=3
    )
