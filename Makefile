# Two commands for a fresh clone (README "Quick start"): `make demo` and `make test`.
# Everything else is set up by these targets: a local virtual environment from
# pyproject.toml, and Mosquitto from the OS packages when it is missing.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
MPY    := $(BIN)/micropython
STUBS  := $(VENV)/mpy-stubs
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export IVGW_VECTORS ?= $(abspath ../shared/vectors)

.PHONY: setup mosquitto demo test test-mpy test-py lint typecheck bench bench-protocol soak clean

setup: $(STAMP) $(STUBS)/.installed

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required, this is " + sys.version.split()[0]'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

# Board-port stubs go in their own folder: in site-packages they would shadow CPython's
# own stdlib for type checkers.
$(STUBS)/.installed: $(STAMP)
	rm -rf $(STUBS)
	$(BIN)/pip install -q --no-deps --target $(STUBS) $$($(BIN)/python tools/extras.py firmware-stubs)
	touch $@

# Mosquitto from Debian/Ubuntu packages; only the binary is used (tests start their own
# brokers on free loopback ports), so the system service is not needed.
mosquitto:
	@if command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; then :; else \
	  echo "Installing mosquitto from the OS packages"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq mosquitto mosquitto-clients >/dev/null && \
	  ($(SUDO) systemctl disable --now mosquitto >/dev/null 2>&1 || true); \
	fi

# The main job on embedded defaults: gateway, embedded broker, three emulated chairs
# (real firmware in MicroPython); one chair trips an interlock; reports at the end.
demo: setup
	$(BIN)/python -m gateway.selfcheck
	$(BIN)/ivgw demo

lint: setup
	$(BIN)/ruff check protocol gateway firmware emulators tests hil_tests bench

typecheck: setup
	$(BIN)/python tools/typecheck.py

# The portable tests under the real MicroPython interpreter (the same files pytest runs
# under CPython as the oracle).
test-mpy: setup
	@echo "== MicroPython $$($(MPY) -c 'import sys; print(sys.version)')"
	MICROPYPATH=.:.frozen $(MPY) tests/portable/run.py

test-py: setup mosquitto
	$(BIN)/python -m pytest -m "not soak"

test: setup mosquitto lint typecheck test-mpy test-py

bench-protocol: setup
	$(BIN)/python bench/protocol_bench.py

# Every benchmark (docs/performance.md), about 14 minutes on 2 cores; results in bench/results.
bench: setup mosquitto
	$(BIN)/python bench/run_all.py

# Long soak runs (hours, many chairs): IVGW_SOAK_S=3600 IVGW_SOAK_CHAIRS=6 make soak
soak: setup mosquitto
	$(BIN)/python -m pytest -m soak -s hil_tests

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
