"""Print the requirements of one optional-dependency group of pyproject.toml (for make)."""

import sys
import tomllib

with open("pyproject.toml", "rb") as f:
    print(" ".join(r for r in tomllib.load(f)["project"]["optional-dependencies"][sys.argv[1]]))
