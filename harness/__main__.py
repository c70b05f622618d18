"""``python -m harness`` (see harness/cli.py)."""

from harness.cli import entry

if __name__ == "__main__":
    entry()
