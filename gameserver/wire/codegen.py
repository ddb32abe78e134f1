"""Regenerate the protobuf/gRPC modules from proto/ (the single source of truth for the API).

`python -m gameserver.wire.codegen` rewrites gameserver/wire/generated/; a test runs
it into a temporary folder and fails when the committed modules are stale.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = ROOT / "proto"
PROTOS = ("gamefleet/v1/batch.proto", "gamefleet/v1/moves.proto", "gamefleet/v1/replay.proto")
GENERATED = Path(__file__).resolve().parent / "generated"


def generate(out_dir: Path) -> list[Path]:
    """Compile every proto into out_dir as a flat package with relative imports."""
    from grpc_tools import protoc  # dev-only dependency: the runtime uses the committed modules

    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as raw:
        args = [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"--python_out={raw}",
            f"--pyi_out={raw}",
            f"--grpc_python_out={raw}",
        ]
        if protoc.main([*args, *(str(PROTO_ROOT / p) for p in PROTOS)]) != 0:
            raise RuntimeError("protoc failed")
        written = []
        for source in sorted(Path(raw).rglob("*.py*")):
            text = re.sub(
                r"^from gamefleet\.v1 import (\w+)", r"from . import \1", source.read_text(), flags=re.M
            )
            target = out_dir / source.name
            target.write_text(text)
            written.append(target)
    (out_dir / "__init__.py").write_text(
        '"""Generated from proto/ by gameserver.wire.codegen; do not edit."""\n'
    )
    return [*written, out_dir / "__init__.py"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=GENERATED)
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path.relative_to(args.out.parent) if args.out == GENERATED else path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
