"""The persisted boot counter: sequence numbers restart at each boot, so (boot, seq) never
repeats only if the counter is incremented and safely on flash *before* the first message.

Two copies, each replaced atomically: a corrupted copy (worn flash, a tool writing
garbage) leaves the other, and the counter continues from the larger valid value. If both
are unreadable the node refuses to start: reusing a boot number would let the gateway see
its packets as replays, and guessing could reuse one.
"""

from firmware.hal.storage import ConfigError, exists, write_atomic

_FILES = ("boot.a", "boot.b")


def _read(path):
    try:
        with open(path) as f:
            text = f.read().strip()
        n = int(text)
        return n if 0 <= n < (1 << 32) - 1 else None
    except (OSError, ValueError):
        return None


def next_boot(state_dir):
    """Increment, persist and return the boot counter (1 on the very first boot)."""
    paths = [state_dir + "/" + f for f in _FILES]
    values = [_read(p) for p in paths]
    present = [exists(p) for p in paths]
    valid = [v for v in values if v is not None]
    if valid:
        boot = max(valid) + 1
    elif any(present):
        raise ConfigError("%s: boot counter unreadable in both copies; re-provision the node"
                          % state_dir)
    else:
        boot = 1
    data = ("%d\n" % boot).encode()
    for p in paths:
        write_atomic(p, data)
    return boot
