"""Command line: ``python -m gaussdiff_lib data`` (make sure the book's data is present) and
``python -m gaussdiff_lib execute --profile cpu --out book`` (run the notebooks with papermill)."""
import argparse
import sys

from . import data, profiles


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gaussdiff_lib")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("data", help="locate (or download) Fashion-MNIST, the book's default data")
    ex = sub.add_parser("execute", help="execute the notebooks under a profile with papermill")
    ex.add_argument("--profile", default="cpu", help=f"one of {profiles.names()}")
    ex.add_argument("--out", default=str(profiles.root() / "book"), help="folder for the executed notebooks")
    ex.add_argument("--only", nargs="*", help="notebook names (without .ipynb) to run")
    ex.add_argument("--force", action="store_true", help="re-execute notebooks that are up to date")
    args = parser.parse_args(argv)
    if args.command == "data":
        for split in ("train", "test"):
            print("fashion-mnist", split, *data.find_fashion_mnist(split))
    else:
        profiles.execute(args.profile, args.out, args.only, force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
