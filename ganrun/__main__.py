"""``python -m ganrun`` is the ``ganrun`` command."""

from ganrun.commands.cli import train_main

if __name__ == "__main__":
    train_main()
