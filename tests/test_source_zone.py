"""The SELD-style source-zone head: targets, loss and what it can learn."""
import torch
import torch.nn.functional as F

from spatial_clap_sb.models.source_zone import SourceZoneHead, source_classes

ZONES = ["left", "front", "right"]


def scene(*pairs):
    return [{"label": label, "caption": f"a {label}", "zone": zone} for label, zone in pairs]


def test_classes_are_tags_then_the_label_and_never_the_clip():
    assert source_classes({"label": "dog", "clip_id": "d1", "caption": "x"}) == ("dog",)
    assert source_classes({"label": "dog", "tags": ["/m/a", "/m/b"]}) == ("/m/a", "/m/b")
    assert source_classes({"label": None, "clip_id": "d1", "caption": "x"}) == ()
    assert source_classes({"caption": "a dog barks"}) == ()


def test_targets_flatten_known_sources_and_skip_unknown_ones():
    head = SourceZoneHead(["dog", "car", "bell"], ZONES, embedding_dim=4)
    assert head.labels == ["bell", "car", "dog"]  # sorted: same index on every rank
    batch = [scene(("dog", "left"), ("car", "right")),
             scene(("cat", "front")),                   # unknown class: skipped
             scene(("bell", "front"), ("dog", "nowhere"))]  # unknown zone: skipped
    rows, classes, zones = head.targets(batch)
    assert rows.tolist() == [0, 0, 2]
    assert classes.tolist() == [2, 1, 0]
    assert zones.tolist() == [0, 2, 1]


def test_loss_is_the_cross_entropy_of_the_picked_class():
    torch.manual_seed(0)
    head = SourceZoneHead(["a", "b"], ZONES, embedding_dim=5, scale=2.0)
    emb = F.normalize(torch.randn(2, 5), dim=-1)
    rows, classes, zones = torch.tensor([0, 1]), torch.tensor([1, 0]), torch.tensor([2, 0])
    logits = head.readout(2.0 * emb).view(2, 2, 3)
    expected = F.cross_entropy(torch.stack([logits[0, 1], logits[1, 0]]), zones)
    assert torch.allclose(head(emb, rows, classes, zones), expected)


def test_no_target_gives_a_zero_that_still_has_a_gradient():
    head = SourceZoneHead(["a"], ZONES, embedding_dim=3)
    emb = torch.randn(2, 3, requires_grad=True)
    empty = torch.zeros(0, dtype=torch.long)
    loss = head(emb, empty, empty, empty)
    loss.backward()
    assert loss.item() == 0.0 and head.readout.weight.grad is not None


def test_learns_which_class_is_where_in_two_source_mixtures():
    """Embeddings that add per-(class, zone) codes: the head recovers the binding."""
    torch.manual_seed(0)
    labels, dim = ["a", "b", "c", "d"], 32
    codes = torch.randn(len(labels), len(ZONES), dim)
    head = SourceZoneHead(labels, ZONES, embedding_dim=dim)
    optimizer = torch.optim.Adam(head.parameters(), lr=0.05)

    def batch(n):
        scenes, embs = [], []
        for _ in range(n):
            pair = torch.randperm(len(labels))[:2]
            where = torch.randperm(len(ZONES))[:2]
            scenes.append(scene(*[(labels[c], ZONES[z]) for c, z in zip(pair, where)]))
            embs.append(codes[pair[0], where[0]] + codes[pair[1], where[1]])
        return scenes, F.normalize(torch.stack(embs), dim=-1)

    scenes, emb = batch(64)
    first = head(emb, *head.targets(scenes)).item()
    for _ in range(150):
        scenes, emb = batch(64)
        loss = head(emb, *head.targets(scenes))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    scenes, emb = batch(200)
    rows, classes, zones = head.targets(scenes)
    logits = head.readout(head.scale * emb).view(len(emb), len(labels), len(ZONES))
    accuracy = (logits[rows, classes].argmax(-1) == zones).float().mean().item()
    assert head(emb, rows, classes, zones).item() < 0.5 * first
    assert accuracy > 0.9


def test_assignment_scores_rank_the_true_assignment_of_a_confident_head():
    head = SourceZoneHead(["a", "b", "c"], ZONES, embedding_dim=9, scale=1.0)
    with torch.no_grad():  # class i's logits read dimensions 3i..3i+2: one per zone
        head.readout.weight.copy_(20 * torch.eye(9))
        head.readout.bias.zero_()
    sources = scene(("a", "right"), ("b", "left"), ("c", "front"))
    emb = torch.zeros(1, 9)
    emb[0, [0 * 3 + 2, 1 * 3 + 0, 2 * 3 + 1]] = 1.0  # a right, b left, c front
    true, permuted = head.assignment_scores(emb, [sources])
    assert true.shape == (1,) and permuted.shape == (1, 5)
    assert true[0] > permuted[0].max()
    swapped = [dict(sources[0], zone="left"), dict(sources[1], zone="right"), sources[2]]
    true, permuted = head.assignment_scores(emb, [swapped])
    assert true[0] < permuted[0].max()
