"""CURVE key management for the secured results socket.

::

    python -m pipeline.keys generate --dir keys --name server     # keys/server.key + .key_secret
    python -m pipeline.keys generate --dir keys --name robot1
    mkdir -p keys/authorized && cp keys/robot1.key keys/authorized/
    python -m pipeline.keys show keys/server.key                   # print the Z85 public key

See :mod:`pipeline.transport.security` for how the files are used.
"""

from __future__ import annotations

import argparse
import sys

from pipeline.errors import PipelineError


def _generate(args: argparse.Namespace) -> int:
    from pipeline.transport.security import generate_keypair

    public, secret = generate_keypair(args.dir, args.name, overwrite=args.force)
    print(f"public key: {public}")
    print(f"secret key: {secret} (keep private)")
    return 0


def _show(args: argparse.Namespace) -> int:
    from pipeline.transport.security import load_public_key

    print(load_public_key(args.file).decode("ascii"))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.keys", description="Manage CURVE keys for the results socket."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", help="write NAME.key (public) and NAME.key_secret (secret)")
    gen.add_argument("--dir", required=True, help="directory for the key files (created if missing)")
    gen.add_argument("--name", required=True, help="key name, e.g. server or robot1")
    gen.add_argument("--force", action="store_true", help="replace existing key files")
    gen.set_defaults(func=_generate)
    show = commands.add_parser("show", help="print the public key (Z85) of a key file")
    show.add_argument("file")
    show.set_defaults(func=_show)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
