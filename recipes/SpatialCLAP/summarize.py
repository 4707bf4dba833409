#!/usr/bin/env python3
"""Summarises recipe runs: a markdown results table and a plot of training curves.

    python summarize.py --runs default=results/a no_scl=results/b --plot curves.png

Each run folder is an ``output_folder`` of train.py (``test_metrics.json`` and
``train_log.txt``).
"""
import argparse
import json
import os
import re

COLUMNS = [("test_2src", "assignment_acc", "2-src assign"),
           ("test_3src", "assignment_acc", "3-src assign"),
           ("test_1src", "direction_acc", "direction (zero-shot)"),
           ("test_1src", "direction_probe_acc", "direction probe"),
           ("test_2src", "t2a_R@1", "2-src t2a R@1"),
           ("test_2src", "a2t_R@1", "2-src a2t R@1"),
           ("test_2src", "mAP@10", "2-src mAP@10"),
           ("test_1src", "t2a_R@1", "1-src t2a R@1"),
           ("test_3src", "t2a_R@1", "3-src t2a R@1"),
           ("test_2src_heldout", "assignment_acc", "held-out 2-src assign"),
           ("test_3src_heldout", "assignment_acc", "held-out 3-src assign"),
           ("test_1src_heldout", "direction_acc", "held-out direction"),
           ("test_2src_heldout", "t2a_R@1", "held-out 2-src t2a R@1")]
LOG_VALUE = re.compile(r"(train|valid) ([^:,]+): ([-0-9.e+]+)")


def read_log(folder):
    """Per epoch: {"train loss": ..., "valid assignment_acc": ...}."""
    epochs = []
    with open(os.path.join(folder, "train_log.txt"), encoding="utf-8") as f:
        for line in f:
            epochs.append({f"{stage} {key.strip()}": float(value)
                           for stage, key, value in LOG_VALUE.findall(line)})
    return epochs


def table(runs):
    """Markdown table of the test metrics of each run."""
    lines = ["| run | " + " | ".join(c[2] for c in COLUMNS) + " |",
             "|---" * (len(COLUMNS) + 1) + "|"]
    for name, folder in runs.items():
        with open(os.path.join(folder, "test_metrics.json"), encoding="utf-8") as f:
            metrics = json.load(f)
        cells = [f"{metrics[test][key]:.3f}" if key in metrics.get(test, {}) else "-"
                 for test, key, _ in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(runs, path):
    """Training loss and validation metrics per epoch, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ["train loss", "valid assignment_acc", "valid direction_acc", "valid t2a_R@1"]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2))
    for name, folder in runs.items():
        epochs = read_log(folder)
        for ax, key in zip(axes, keys):
            ax.plot(range(1, len(epochs) + 1), [e.get(key) for e in epochs], "o-",
                    label=name)
    for ax, key in zip(axes, keys):
        ax.set_title(key)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", required=True, help="name=folder ...")
    parser.add_argument("--plot", help="PNG of the training curves")
    args = parser.parse_args()
    runs = dict(item.split("=", 1) for item in args.runs)
    print(table(runs))
    if args.plot:
        plot(runs, args.plot)


if __name__ == "__main__":
    main()
