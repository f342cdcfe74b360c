"""The hardware-in-the-loop test bench: N chairs (real firmware in the real MicroPython
interpreter, emulated pump and monitors that speak the real bytes), a real broker and the
real gateway, brought up and torn down together. Used by hil_tests/, the demo and the
benchmarks (docs/hil.md)."""
