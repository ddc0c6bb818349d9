"""`python -m character` is the `character` command."""

from character.cli import main

if __name__ == "__main__":
    main()
