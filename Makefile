# candlecast: `make run` runs the whole system on this machine; `make test` runs the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
FREQTRADE_VENV ?= .venv-freqtrade
export FREQTRADE_VENV

.PHONY: run test test-embedded test-scaleout lint typecheck bench bench-status bench-fanout browser

$(VENV)/.installed: pyproject.toml
	@echo "setting up $(VENV) (first run only, about a minute)..."
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

$(FREQTRADE_VENV)/.installed: scripts/freqtrade-venv
	scripts/freqtrade-venv
	touch $@

run: $(VENV)/.installed
	$(PY) manage.py rundemo

# Lint and types first, then both modes: the embedded default, then Redis +
# PostgreSQL on this machine.
test: lint test-embedded test-scaleout

test-embedded: $(VENV)/.installed $(FREQTRADE_VENV)/.installed
	$(VENV)/bin/pytest

test-scaleout: $(VENV)/.installed $(FREQTRADE_VENV)/.installed
	REDIS_URL=$${TEST_REDIS_URL:-redis://127.0.0.1:6379/0} \
	DATABASE_URL=$${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/candlecast} \
	$(VENV)/bin/pytest

lint: typecheck
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# mypy over the apps, with django-stubs (config in pyproject.toml). Not incremental:
# django-stubs' plugin loses reverse relations from a warm cache after some edits
# (false "Couldn't resolve related manager" errors); a cold run takes about 15 s.
typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy --no-incremental

bench: $(VENV)/.installed
	$(PY) benchmarks/bench_frames.py

# What the status page costs the hub, with 100 pairs.
bench-status: $(VENV)/.installed
	$(PY) benchmarks/bench_status.py

# One producer, K = 1..100 consumers: the hub against a raw websockets server.
# FANOUT_ARGS adds flags, e.g. FANOUT_ARGS="--server uvicorn --markdown var/fanout.md".
bench-fanout: $(VENV)/.installed
	$(PY) benchmarks/bench_fanout.py --consumers 1,10,50,100 --pairs 100 --rows 1500 \
	  --ticks 20 --modes raw,freqtrade,native $(FANOUT_ARGS)

# The status page's browser test needs Debian's Chromium (as root; .ci/run does it).
browser:
	test -x /usr/bin/chromium || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; }

# An upstream FreqTrade bot's CPU: 50 consumers on it directly, or through the hub.
.PHONY: bench-relay bench-network
bench-relay: $(VENV)/.installed $(FREQTRADE_VENV)/.installed
	$(PY) benchmarks/bench_relay.py

# The hub and FreqTrade's producer over a 100 Mbit/s, 20 ms link (a veth into a
# network namespace; as root). NETWORK_ARGS adds flags, e.g. NETWORK_ARGS="--pairs 100".
bench-network: $(VENV)/.installed $(FREQTRADE_VENV)/.installed
	$(PY) benchmarks/bench_network.py --consumers 1,10,100 --pairs 20 --rows 1500 \
	  --rate-mbit 100 --delay-ms 20 $(NETWORK_ARGS)
