"""``python -m synthbench``: the same CLI as the ``synthbench`` command."""

from synthbench.cli.main import main

if __name__ == "__main__":
    main()
