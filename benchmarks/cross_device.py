#!/usr/bin/env python
"""Files written on one machine decode to the same pixels on another machine, its CPU and its GPU.

``write`` codes corpus test slices here with the shipped models (the default lossy
``medvae-ctx`` at two qualities, lossless, near-lossless τ = 2) and stores the files, the
digest of the pixels this machine decodes from them, and the source slices in ``DIR``. ``check``, run on
the other machine (a leased GPU machine has no corpus and needs none), decodes every file
on each device it has and re-encodes every source slice there, and prints per device how
many files decode to identical pixels and how many re-encodings give identical bytes.
A decode that raises counts as a mismatch. It exits with 1 on any mismatch.

    python benchmarks/cross_device.py write DIR [--slices 2]
    python benchmarks/cross_device.py check DIR [--devices cpu,cuda]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

import medvae

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO.parent / "shared/data/corpus-plus/MANIFEST.csv"
#: (label, model, compress options): the shipped default's lossy, lossless and near-lossless paths.
SETTINGS = [
    ("medvae-ctx q2", "medvae-ctx", {"quality": 2.0}),
    ("medvae-ctx q5.5", "medvae-ctx", {"quality": 5.5}),
    ("lossless", "medvae", {"max_error": 0}),
    ("near-lossless 2", "medvae", {"max_error": 2}),
]


def pixel_digest(pixels: np.ndarray) -> str:
    """SHA-256 of the decoded integers with their dtype and shape: equal digests, identical pixels."""
    return hashlib.sha256(f"{pixels.dtype.str}{pixels.shape}".encode() + np.ascontiguousarray(pixels).tobytes()).hexdigest()


def corpus_slices(slices: int) -> list[np.ndarray]:
    """``slices`` CT test slices and the MR test slice of the corpus with its training extras."""
    from medvae.evaluation.datasets import load_images

    images = load_images([MANIFEST], "test", modality="CT", max_slices=1, limit=slices)
    images += load_images([MANIFEST], "test", modality="MR", max_slices=1, limit=1)
    return [image.pixels for image in images]


def write(folder: Path, images: list[np.ndarray]) -> int:
    """Code ``images`` here with every setting; store what ``check`` needs, and the machine that
    wrote it, in a new or empty ``folder``. The number of files."""
    if folder.exists() and any(folder.iterdir()):
        raise SystemExit(f"{folder} exists and is not empty: give a new folder")
    folder.mkdir(parents=True, exist_ok=True)
    codecs = {model: medvae.load(model) for _, model, _ in SETTINGS}
    sources, decoded, files = {}, {}, []
    for i, pixels in enumerate(images):
        sources[f"image{i}"] = pixels
        for label, model, options in SETTINGS:
            data = codecs[model].compress(pixels, **options)
            name = f"image{i}-{label.replace(' ', '_')}.mvae"
            (folder / name).write_bytes(data)
            decoded[name] = pixel_digest(codecs[model].decompress(data))
            files.append({"file": name, "image": f"image{i}", "model": model, "options": options, "label": label})
    np.savez_compressed(folder / "sources.npz", **sources)
    (folder / "decoded.json").write_text(json.dumps(decoded, indent=1))
    (folder / "files.json").write_text(json.dumps(files, indent=1))
    (folder / "written_on.txt").write_text(machine() + "\n")
    return len(files)


def machine() -> str:
    """The processor, its SIMD level as torch sees it, and the library versions."""
    return (f"{platform.processor() or platform.machine()}, {_cpu_name()}, torch {torch.__version__} "
            f"({torch.backends.cpu.get_cpu_capability()}), numpy {np.__version__}, "
            f"GPU: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}")


def _cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "CPU model unknown"
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "CPU model unknown")


def check(folder: Path, devices: list[str]) -> bool:
    """Decode and re-encode everything in ``folder`` on each device; True when all agree."""
    files = json.loads((folder / "files.json").read_text())
    sources, decoded = np.load(folder / "sources.npz"), json.loads((folder / "decoded.json").read_text())
    agree = True
    for device in devices:
        codecs = {model: medvae.load(model, device=device) for model in {f["model"] for f in files}}
        for label in dict.fromkeys(f["label"] for f in files):
            same_pixels = same_bytes = 0
            seconds = 0.0
            chosen = [f for f in files if f["label"] == label]
            for f in chosen:
                data = (folder / f["file"]).read_bytes()
                codec = codecs[f["model"]]
                start = time.perf_counter()
                try:
                    same_pixels += pixel_digest(codec.decompress(data)) == decoded[f["file"]]
                except Exception as exc:  # noqa: BLE001 - any failure there is a mismatch to report, not a crash
                    print(f"  {device} {f['file']}: decode raised {type(exc).__name__}: {exc}")
                seconds += time.perf_counter() - start
                try:
                    same_bytes += codec.compress(sources[f["image"]], **f["options"]) == data
                except Exception as exc:  # noqa: BLE001
                    print(f"  {device} {f['file']}: re-encoding raised {type(exc).__name__}: {exc}")
            agree &= same_pixels == same_bytes == len(chosen)
            print(f"{device:5s} {label:16s} identical pixels {same_pixels}/{len(chosen)}  identical bytes "
                  f"{same_bytes}/{len(chosen)}  decode {seconds / len(chosen):.2f} s/file")
    return agree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["write", "check"])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--slices", type=int, default=2, help="CT test slices (write)")
    parser.add_argument("--devices", default=None, help="comma-separated (check; default: cpu, and cuda when present)")
    args = parser.parse_args()
    if args.action == "write":
        images = corpus_slices(args.slices)
        print(f"{write(args.folder, images)} files of {len(images)} slices in {args.folder}")
        return
    devices = args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    written_on = args.folder / "written_on.txt"
    print(f"written on: {written_on.read_text().strip() if written_on.is_file() else 'not recorded'}")
    print(f"checking on {', '.join(devices)}: {machine()}")
    sys.exit(0 if check(args.folder, devices) else 1)


if __name__ == "__main__":
    main()
