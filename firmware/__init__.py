"""The chairside node (docs/firmware.md)."""

import sys


def unload(names):
    """Forget modules: drop them from ``sys.modules`` and from their parent package (an
    import binds a submodule there too), so the GC can free their code. Used at boot for
    code the running node never calls again (firmware/boot.py)."""
    for name in names:
        sys.modules.pop(name, None)
        pkg, _, leaf = name.rpartition(".")
        parent = sys.modules.get(pkg)
        if parent is not None and hasattr(parent, leaf):
            delattr(parent, leaf)
