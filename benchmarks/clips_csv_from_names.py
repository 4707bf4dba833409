"""Writes a clips CSV (path,caption,label) for a folder of recordings named by what they are.

Each file's caption is its name in words ("sea_lion.ogg" -> "a sea lion") and its label
is the name, so every clip is its own class: the labelling many labs have. Used for the
fine-tuning example of the recipe README, on the animal and household recordings of
Debian's tuxpaint-stamps-default package::

    apt-get download tuxpaint-stamps-default && dpkg-deb -x tuxpaint-stamps-default_*.deb stamps
    python benchmarks/clips_csv_from_names.py stamps/usr/share/tuxpaint/stamps clips.csv \
        --exclude symbols --exclude _desc

Files whose stem ends in a locale code (``_fr``, ``_en_GB``: spoken names) are left out.
"""
import argparse
import csv
import os
import re

EXTENSIONS = (".wav", ".flac", ".ogg")
LOCALE_SUFFIX = re.compile(r"_[a-z]{2}(_[a-zA-Z]{2})?$")


def caption_from_name(stem):
    """'sea_lion' -> 'a sea lion'; 'apple_red' -> 'an apple red'."""
    words = re.sub(r"[_\-]+|\d+", " ", stem).lower().split()
    article = "an" if words and words[0][0] in "aeiou" else "a"
    return " ".join([article] + words)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder")
    parser.add_argument("output_csv")
    parser.add_argument("--exclude", action="append", default=[],
                        help="leave out paths containing this text (repeatable)")
    args = parser.parse_args()
    rows = []
    for folder, subfolders, names in os.walk(args.folder):
        subfolders.sort()
        for name in sorted(names):
            path = os.path.join(folder, name)
            stem, ext = os.path.splitext(name)
            if (ext.lower() not in EXTENSIONS or LOCALE_SUFFIX.search(stem)
                    or any(text in path for text in args.exclude)):
                continue
            rows.append([os.path.abspath(path), caption_from_name(stem), stem])
    with open(args.output_csv, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "caption", "label"])
        writer.writerows(rows)
    print(f"{len(rows)} clips -> {args.output_csv}")


if __name__ == "__main__":
    main()
