#!/usr/bin/env python3
"""Evaluates an exported Spatial-CLAP model on a scene manifest.

    cd recipes/SpatialCLAP
    python evaluate.py --model results/spatial_clap/1234/model \
        --manifest data/generated/manifests/test_2src.json --data_root data/generated \
        --output results/spatial_clap/1234/eval_test_2src

Writes <output>/metrics.json (the keys of test_metrics.json: t2a_R@1/5/10,
a2t_R@1/5/10, mAP@10, assignment_acc, direction_acc, direction_confusion, n_scenes),
<output>/similarity_matrix.png (the first scenes against their captions and permuted
captions) and, with one-source scenes, <output>/direction_confusion.png.
The same as `spatial-clap evaluate`; the logic is spatial_clap_sb.evaluation.evaluate_manifest.
"""
import sys

from spatial_clap_sb.cli import evaluate_main

if __name__ == "__main__":
    sys.exit(evaluate_main())
