"""Small files on the node's flash: read, and replace atomically (write + rename).

A power cut during ``write_atomic`` leaves either the old or the new content, never a
mix: littlefs (rp2, esp32) and POSIX both make ``rename`` atomic.
"""

import json

try:
    import os
except ImportError:  # pragma: no cover
    import uos as os  # type: ignore


class ConfigError(Exception):
    """A provisioning file is missing or malformed; the message names the file and field."""


def read_bytes(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        raise ConfigError("%s: missing or unreadable" % path)


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except OSError:
        raise ConfigError("%s: missing or unreadable" % path)
    except ValueError as e:
        raise ConfigError("%s: not valid JSON (%s)" % (path, e))


def write_atomic(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, path)


def exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False
