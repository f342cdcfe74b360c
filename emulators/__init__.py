"""CPython emulators of the chairside serial devices, for tests, demos and HIL rehearsal.

Each emulator speaks the real device's bytes (see docs/devices.md) and is written
independently of firmware/drivers, so the two ends check each other:

- ``Ne1000Pump``  (ne1000_pump)      New Era NE-1000 syringe pump, Basic + Safe Mode
- ``Radical7``    (masimo_oximeter)  Masimo Radical-7 ASCII serial output
- ``DatexS5``     (datex_monitor)    GE Datex-Ohmeda S/5 computer interface, displayed values

Clocks are injectable (``ScaledClock``, ``ManualClock``) so scenarios run accelerated;
``transport.PtyTransport`` / ``transport.TcpTransport`` put an emulator on a pseudo-terminal
or a loopback TCP port for a node process to open.
"""

from .base import Emulator, ManualClock, ScaledClock
from .datex_monitor import DatexS5
from .masimo_oximeter import Radical7
from .ne1000_pump import Ne1000Pump
from .transport import PtyTransport, TcpTransport

__all__ = [
    "DatexS5",
    "Emulator",
    "ManualClock",
    "Ne1000Pump",
    "PtyTransport",
    "Radical7",
    "ScaledClock",
    "TcpTransport",
]
