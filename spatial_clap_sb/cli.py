"""``spatial-clap``: command line of an exported Spatial-CLAP model.

::

    spatial-clap embed    --model DIR PATH... [--output PREFIX]
    spatial-clap search   --model DIR --text "a dog barks off to the left" PATH... [--top K]
    spatial-clap search   --model DIR --text "..." --embeddings PREFIX [--top K]
    spatial-clap evaluate --model DIR --manifest test.json [--data_root DIR] [--output DIR]
                          [--probe_manifest valid.json]
    spatial-clap manifest --audio DIR --captions captions.csv --output DIR
    spatial-clap export-onnx --model DIR --output model.onnx [--text] [--skip_check]

``PATH`` is an audio file or a folder, searched recursively for ``.wav`` and ``.flac``
files; the files are embedded in sorted order. ``embed`` writes ``PREFIX.npy``
(``[n_files, dim]`` float32, unit norm) and ``PREFIX.csv`` (``index,path``); ``search``
prints the best-matching files with their cosine similarity; ``evaluate`` writes
``metrics.json`` and PNG plots (see :mod:`spatial_clap_sb.evaluation`);
``manifest`` checks a folder of stereo recordings and their captions and writes the
train/valid/test manifests that fine-tuning reads (see
:mod:`spatial_clap_sb.data.recordings`); ``export-onnx`` writes the audio tower as an
ONNX file (``--text``: the text tower as a second file, ``OUTPUT_text.onnx``), then
checks it against PyTorch and times it with ONNX Runtime (see
:mod:`spatial_clap_sb.onnx_export`).

Files must be stereo (channel 0 left); ``--allow_mono`` duplicates a mono file into both
channels (its direction is then meaningless). An error (missing path, mono or corrupt
file, bad manifest) ends the command with exit status 1 and a one-line message.
"""
import argparse
import csv
import json
import os
import sys

import numpy as np

AUDIO_EXTENSIONS = (".wav", ".flac")
EXIT_ERROR = 1


class CLIError(Exception):
    """An error to report as one line (no traceback)."""


# ---------------------------------------------------------------------------- helpers


def find_audio_files(paths):
    """Audio files named by ``paths`` (files, or folders searched recursively).

    Arguments
    ---------
    paths : list of str
        Files (taken whatever their extension) and folders (searched recursively for
        ``.wav`` and ``.flac``, case-insensitively).

    Returns
    -------
    list of str
        Unique normalised paths, sorted.

    Raises
    ------
    CLIError
        If a path does not exist, or nothing at all is found.
    """
    found = set()
    for path in paths:
        if os.path.isfile(path):
            found.add(os.path.normpath(path))
        elif os.path.isdir(path):
            for folder, subfolders, files in os.walk(path):
                subfolders.sort()
                for name in files:
                    if name.lower().endswith(AUDIO_EXTENSIONS):
                        found.add(os.path.normpath(os.path.join(folder, name)))
        else:
            raise CLIError(f"No such file or folder: {path}")
    if not found:
        raise CLIError(f"No .wav or .flac file found in {', '.join(paths)}")
    return sorted(found)


def load_model(model_dir, savedir=None, device=None, trust_remote_code=False,
               audio_precision="fp32"):
    """Loads an exported model folder, checking first that it is one (and, unless
    ``trust_remote_code``, that it runs no code of its own)."""
    if not os.path.isdir(model_dir):
        raise CLIError(f"Model folder not found: {model_dir}")
    if not os.path.isfile(os.path.join(model_dir, "hyperparams.yaml")):
        raise CLIError(f"{model_dir} holds no hyperparams.yaml: not an exported "
                       "Spatial-CLAP model folder")
    from spatial_clap_sb.inference import SpatialCLAP

    run_opts = {"device": device} if device else None
    return SpatialCLAP.from_hparams(source=os.path.abspath(model_dir), savedir=savedir,
                                    run_opts=run_opts,
                                    trust_remote_code=trust_remote_code,
                                    audio_precision=audio_precision)


def _prefix(output):
    return output[:-4] if output.endswith((".npy", ".csv")) else output


def read_embeddings(prefix):
    """Reads ``PREFIX.npy`` and ``PREFIX.csv`` written by ``embed``.

    Returns
    -------
    embeddings : numpy.ndarray
        ``[n, dim]``.
    paths : list of str
        The file of each row.
    """
    prefix = _prefix(prefix)
    for ext in (".npy", ".csv"):
        if not os.path.isfile(prefix + ext):
            raise CLIError(f"Embeddings file not found: {prefix + ext}")
    embeddings = np.load(prefix + ".npy")
    with open(prefix + ".csv", newline="", encoding="utf-8") as f:
        rows = sorted(csv.DictReader(f), key=lambda row: int(row["index"]))
    paths = [row["path"] for row in rows]
    if embeddings.ndim != 2 or len(paths) != embeddings.shape[0]:
        raise CLIError(f"{prefix}.npy ({embeddings.shape}) and {prefix}.csv "
                       f"({len(paths)} rows) do not match")
    return embeddings, paths


def write_embeddings(prefix, embeddings, paths):
    """Writes ``PREFIX.npy`` (float32 ``[n, dim]``) and ``PREFIX.csv`` (index,path)."""
    prefix = _prefix(prefix)
    folder = os.path.dirname(os.path.abspath(prefix))
    os.makedirs(folder, exist_ok=True)
    np.save(prefix + ".npy", np.asarray(embeddings, dtype=np.float32))
    with open(prefix + ".csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "path"])
        writer.writerows(enumerate(paths))
    return prefix + ".npy", prefix + ".csv"


# ---------------------------------------------------------------------------- commands


def _embed_files(args):
    paths = find_audio_files(args.paths)
    model = load_model(args.model, args.savedir, args.device, args.trust_remote_code,
                       audio_precision=args.precision)
    embeddings = model.encode_files(paths, batch_size=args.batch_size,
                                    allow_mono=args.allow_mono, progress=True)
    return model, embeddings.cpu().numpy(), paths


def run_embed(args):
    """``spatial-clap embed``."""
    _, embeddings, paths = _embed_files(args)
    npy, csv_path = write_embeddings(args.output, embeddings, paths)
    print(f"Wrote {len(paths)} embeddings of size {embeddings.shape[1]} to {npy} "
          f"and {csv_path}")
    return 0


def run_search(args):
    """``spatial-clap search``."""
    if args.top < 1:
        raise CLIError(f"--top must be at least 1, got {args.top}")
    if bool(args.paths) == bool(args.embeddings):
        raise CLIError("give either audio files/folders or --embeddings PREFIX "
                       "(from spatial-clap embed), not both or neither")
    if args.embeddings:
        embeddings, paths = read_embeddings(args.embeddings)
        model = load_model(args.model, args.savedir, args.device, args.trust_remote_code)
    else:
        model, embeddings, paths = _embed_files(args)
    for rank, (index, score) in enumerate(model.retrieve(args.text, embeddings,
                                                         k=args.top), start=1):
        print(f"{rank}\t{score:.4f}\t{paths[index]}")
    return 0


def run_evaluate(args):
    """``spatial-clap evaluate``."""
    from spatial_clap_sb.evaluation import METRICS_FILE, evaluate_manifest

    if not os.path.isfile(args.manifest):
        raise CLIError(f"Manifest not found: {args.manifest}")
    model = load_model(args.model, args.savedir, args.device, args.trust_remote_code)
    metrics = evaluate_manifest(model, args.manifest, data_root=args.data_root,
                                output_dir=args.output, batch_size=args.batch_size,
                                progress=True, probe_manifest=args.probe_manifest)
    print(json.dumps({k: v for k, v in metrics.items() if not isinstance(v, list)},
                     indent=2))
    print(f"Wrote {os.path.join(args.output, METRICS_FILE)} and plots to {args.output}")
    return 0


def text_onnx_path(output):
    """The text tower's file next to the audio tower's: ``model.onnx`` ->
    ``model_text.onnx``."""
    stem = output[:-5] if output.lower().endswith(".onnx") else output
    return stem + "_text.onnx"


def run_export_onnx(args):
    """``spatial-clap export-onnx``."""
    from spatial_clap_sb import onnx_export as ox

    opset = ox.DEFAULT_OPSET if args.opset is None else args.opset
    try:
        ox.check_onnx_tools(opset)
    except ImportError as error:
        raise CLIError(str(error)) from None
    model = load_model(args.model, args.savedir, args.device, args.trust_remote_code)
    ox.export_onnx(model, args.output, opset=opset)
    metadata = ox.audio_tower_metadata(model)
    print(f"Wrote {args.output}: {ox.INPUT_NAME} float32 [batch, time, 2] at "
          f"{metadata['sample_rate']} Hz (windows of {metadata['chunk_samples']} "
          f"samples) -> {ox.OUTPUT_NAME} [batch, {metadata['embedding_dim']}]")
    if not args.skip_check:
        _report_difference("audio tower", ox.check_onnx_parity(model, args.output))
        speed = ox.onnx_throughput(args.output, model.sample_rate,
                                   seconds=ox.THROUGHPUT_CLIP_SECONDS,
                                   batch_size=args.batch_size)
        print(f"ONNX Runtime throughput: {speed:.0f} s of audio per second (batches of "
              f"{args.batch_size} clips of {ox.THROUGHPUT_CLIP_SECONDS:g} s)")
    if args.text:
        text_path = text_onnx_path(args.output)
        ox.export_text_onnx(model, text_path, opset=opset)
        print(f"Wrote {text_path}: {' and '.join(ox.TEXT_INPUT_NAMES)} int64 [clauses, "
              f"pieces, tokens] -> {ox.TEXT_OUTPUT_NAME} [clauses, "
              f"{metadata['embedding_dim']}]")
        if not args.skip_check:
            _report_difference("text tower", ox.check_text_onnx_parity(
                model, text_path, list(ox.TEXT_CHECK_CAPTIONS)))
    return 0


def _report_difference(tower, difference):
    """Prints the ONNX Runtime vs PyTorch difference; fails above the tolerance."""
    from spatial_clap_sb.onnx_export import PARITY_TOLERANCE

    print(f"{tower}: ONNX Runtime vs PyTorch, max abs difference {difference:.2e}")
    if not difference <= PARITY_TOLERANCE:
        raise CLIError(f"the ONNX {tower} differs from PyTorch by {difference:.2e} "
                       f"(more than {PARITY_TOLERANCE:g}); the file was written but does "
                       "not reproduce the model")


def _export_onnx_arguments(parser):
    _model_arguments(parser)
    parser.add_argument("--output", required=True,
                        help="the audio tower's .onnx file")
    parser.add_argument("--text", action="store_true",
                        help="also write the text tower (transformer, pooling, "
                             "projection of pre-tokenised clauses) to OUTPUT_text.onnx")
    parser.add_argument("--opset", type=int, default=None,
                        help="ONNX opset, 18 or later (default 18)")
    parser.add_argument("--skip_check", action="store_true",
                        help="do not compare with PyTorch nor time ONNX Runtime "
                             "(--batch_size clips of 10 s per timed run)")
    parser.set_defaults(func=run_export_onnx)


# ---------------------------------------------------------------------------- parser


def run_manifest(args):
    from spatial_clap_sb.data.recordings import recording_manifests

    paths = recording_manifests(
        args.audio, args.captions, args.output, sample_rate=args.sample_rate,
        split_fractions=tuple(args.split_fractions), seed=args.seed,
        min_seconds=args.min_seconds, on_bad_data=args.on_bad_data)
    for split, path in paths.items():
        with open(path, encoding="utf-8") as f:
            count = len(json.load(f))
        print(f"{split}: {count} recordings -> {path}")
    return 0


def _manifest_arguments(parser):
    parser.add_argument("--audio", required=True,
                        help="folder of stereo recordings (the CSV's paths are relative "
                             "to it)")
    parser.add_argument("--captions", required=True,
                        help="CSV with path,caption and optional zones,source_captions")
    parser.add_argument("--output", required=True,
                        help="folder of train.json, valid.json and test.json")
    parser.add_argument("--sample_rate", type=int, default=16000,
                        help="the model's sample rate; lower-rate files are refused "
                             "(default 16000)")
    parser.add_argument("--split_fractions", type=float, nargs=3, default=[0.8, 0.1, 0.1],
                        metavar=("TRAIN", "VALID", "TEST"),
                        help="shares of the recordings (default 0.8 0.1 0.1)")
    parser.add_argument("--seed", type=int, default=1234, help="seed of the split")
    parser.add_argument("--min_seconds", type=float, default=0.5,
                        help="shortest usable recording (default 0.5)")
    parser.add_argument("--on_bad_data", choices=("stop", "skip"), default="stop",
                        help="stop (default): report every bad file and row and write "
                             "nothing; skip: leave them out")
    parser.set_defaults(func=run_manifest)


def _model_arguments(parser):
    parser.add_argument("--model", required=True,
                        help="exported model folder (hyperparams.yaml + *.ckpt)")
    parser.add_argument("--savedir", default=None,
                        help="folder for SpeechBrain's links to the model files "
                             "(default: read the model folder directly)")
    parser.add_argument("--device", default=None, help="e.g. cpu or cuda:0")
    parser.add_argument("--trust_remote_code", action="store_true",
                        help="load a model folder whose hyperparams.yaml or weights run "
                             "code of their own (refused by default; only for folders "
                             "from people you trust)")
    parser.add_argument("--batch_size", type=int, default=16,
                        help="files (or scenes) embedded per step (default 16)")


def _audio_arguments(parser, required=True):
    parser.add_argument("paths", nargs="+" if required else "*", metavar="PATH",
                        help="audio files or folders (searched recursively for "
                             ".wav/.flac)")
    parser.add_argument("--allow_mono", action="store_true",
                        help="duplicate mono files into both channels (direction is "
                             "then meaningless) instead of failing")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="the audio tower's precision: bf16 runs it in bfloat16 "
                             "autocast, faster where the CPU (AVX-512 BF16) or GPU has "
                             "bfloat16 kernels, with embeddings within a cosine of about "
                             "1e-4 of fp32's (default fp32)")


def _evaluate_arguments(parser):
    _model_arguments(parser)
    parser.add_argument("--manifest", required=True, help="SpeechBrain JSON manifest")
    parser.add_argument("--data_root", default=None,
                        help="replaces {data_root} in the manifest (default: the "
                             "manifest's folder)")
    parser.add_argument("--output", default="evaluation",
                        help="folder of metrics.json and the plots (default: evaluation)")
    parser.add_argument("--probe_manifest", default=None,
                        help="also report direction_probe_acc: a linear probe fitted "
                             "on this manifest's one-source scenes (e.g. valid.json)")
    parser.set_defaults(func=run_evaluate, command="evaluate")


def build_parser(prog=None):
    """The ``argparse`` parser of ``spatial-clap`` and its subcommands."""
    parser = argparse.ArgumentParser(
        prog=prog or "spatial-clap",
        description="Spatial-CLAP: embeddings of stereo scenes and captions.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    embed = commands.add_parser("embed", help="embed audio files into PREFIX.npy/.csv")
    _model_arguments(embed)
    _audio_arguments(embed)
    embed.add_argument("--output", default="embeddings",
                       help="output prefix: writes PREFIX.npy and PREFIX.csv "
                            "(default: embeddings)")
    embed.set_defaults(func=run_embed)

    search = commands.add_parser("search", help="rank audio files for a text query")
    _model_arguments(search)
    _audio_arguments(search, required=False)
    search.add_argument("--text", required=True, help="the query caption")
    search.add_argument("--top", type=int, default=5, help="results shown (default 5)")
    search.add_argument("--embeddings", default=None,
                        help="search the PREFIX.npy/.csv of 'embed' instead of files")
    search.set_defaults(func=run_search)

    evaluate = commands.add_parser("evaluate",
                                   help="retrieval, assignment and direction metrics "
                                        "of a scene manifest")
    _evaluate_arguments(evaluate)

    manifest = commands.add_parser("manifest",
                                   help="check stereo recordings and their captions; "
                                        "write train/valid/test manifests")
    _manifest_arguments(manifest)

    export_onnx = commands.add_parser("export-onnx",
                                      help="write the audio tower (and with --text the "
                                           "text tower) as ONNX for deployment")
    _export_onnx_arguments(export_onnx)
    return parser


def _one_line(error):
    from spatial_clap_sb.data.checks import DataCheckError
    from spatial_clap_sb.trust import UntrustedModelError

    if isinstance(error, DataCheckError | UntrustedModelError):  # a line per problem
        return str(error)
    if isinstance(error, KeyError) and error.args:
        message = str(error.args[0])
    else:
        message = str(error) or type(error).__name__
    # The library's hint names the Python argument; here it is a flag.
    message = message.replace("allow_mono=True", "--allow_mono")
    return " ".join(message.split())


def _run(parser, args):
    """Runs ``args.func``; an expected error becomes one line on stderr and status 1."""
    if getattr(args, "batch_size", 1) < 1:
        parser.error(f"--batch_size must be at least 1, got {args.batch_size}")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"{parser.prog} {args.command}: interrupted", file=sys.stderr)
        return 130
    except (CLIError, OSError, ValueError, KeyError, TypeError, RuntimeError) as error:
        print(f"{parser.prog}: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_ERROR


def main(argv=None, prog=None):
    """Runs ``spatial-clap``; returns the exit status (0 on success, 1 on an error).

    Arguments
    ---------
    argv : list of str, optional
        Arguments (default: ``sys.argv[1:]``).
    prog : str, optional
        Program name shown in the help and error messages.

    Returns
    -------
    int

    Example
    -------
    >>> main(["embed", "--model", "model", "scenes/", "--output", "emb"])
    ...  # doctest: +SKIP
    0
    """
    parser = build_parser(prog)
    return _run(parser, parser.parse_args(argv))


def evaluate_main(argv=None, prog="evaluate.py"):
    """``spatial-clap evaluate`` as a stand-alone program (the recipe's evaluate.py)."""
    parser = argparse.ArgumentParser(
        prog=prog, description="Evaluates an exported Spatial-CLAP model on a scene "
        "manifest: metrics.json and PNG plots.")
    _evaluate_arguments(parser)
    return _run(parser, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
