"""CRC-16/XMODEM (poly 0x1021, init 0x0000, no reflection, no final XOR).

The NE-1000 manual calls it the "16 bit CCITT CRC" of the packet's transmitted data, sent
high byte first (NE-1000 User Manual, Publication #1200-01, §10.2.3-10.2.4). The manual's
own example, ``SAF0`` -> 0x5543, is the check value the tests pin. A 16-entry nibble table
keeps RAM small (no 512-byte table) while halving the bit loop.
"""

_NIBBLE = (
    0x0000, 0x1021, 0x2042, 0x3063, 0x4084, 0x50A5, 0x60C6, 0x70E7,
    0x8108, 0x9129, 0xA14A, 0xB16B, 0xC18C, 0xD1AD, 0xE1CE, 0xF1EF,
)  # fmt: skip


def crc16_xmodem(data, crc=0):
    """CRC of ``data`` (bytes, bytearray or memoryview), continuing from ``crc``."""
    t = _NIBBLE
    for b in data:
        crc = ((crc << 4) & 0xFFFF) ^ t[((crc >> 12) ^ (b >> 4)) & 0x0F]
        crc = ((crc << 4) & 0xFFFF) ^ t[((crc >> 12) ^ b) & 0x0F]
    return crc
