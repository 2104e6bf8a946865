"""Install a checkpoint directory as a shipped asset: atomically, world-readable, with its weights' sha256.

``make tiny-model`` writes the pretrained model through ``install``; ``make
tiny-block-model`` ships ``unmask sft``'s ``output_dir/final`` with
``python -m unmask.assets.ship SRC OUT``. The ``.sha256`` file lets a test check
that the shipped bytes are the ones a rebuild reproduces.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

HASH_FILE = "model.safetensors.sha256"
WEIGHTS = "model.safetensors"


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def install(fill: Callable[[Path], None], out: str | Path) -> Path:
    """Let ``fill`` write a checkpoint into a sibling temp dir, then swap it in for ``out``,
    so a crash never leaves half a model."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        fill(tmp)
        tmp.chmod(0o755)  # mkdtemp is private; a shipped checkpoint is world-readable
        for file in tmp.iterdir():
            file.chmod(0o644)
        (tmp / HASH_FILE).write_text(f"{sha256_file(tmp / WEIGHTS)}  {WEIGHTS}\n")
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def ship(src: str | Path, out: str | Path) -> Path:
    """Copy the plain files of checkpoint directory ``src`` into ``out`` (``install``)."""
    src = Path(src)
    if not (src / WEIGHTS).is_file():
        raise SystemExit(f"{src}: no {WEIGHTS}; give a checkpoint directory such as an SFT run's output_dir/final")

    def fill(tmp: Path) -> None:
        for file in sorted(src.iterdir()):
            if file.is_file() and file.name != HASH_FILE:
                shutil.copyfile(file, tmp / file.name)

    return install(fill, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unmask.assets.ship", description=__doc__.splitlines()[0])
    parser.add_argument("src", help="checkpoint directory (e.g. runs/NAME/final)")
    parser.add_argument("out", help="asset directory (e.g. unmask/assets/tiny-countdown-block)")
    args = parser.parse_args(argv)
    out = ship(args.src, args.out)
    print(f"wrote {out} (sha256 {(out / HASH_FILE).read_text().split()[0]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
