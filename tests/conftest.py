from __future__ import annotations

import os
import shutil
import tempfile

import pytest
import trio

from gateway.app import Running, serve
from gateway.config import Config

from .support import SECRET

# Tests that start whole gateway processes, clusters or benchmark runs. They run in the native pass
# of the README's test command; the pure-Python pass (KEFU_PUREPYTHON=1) leaves them out with
# `-m "not processes"` to keep CI under ten minutes: the benchmark smoke run already drives a
# pure-Python gateway (its memory-pure target), and every in-process socket test runs both twins.
# media/test_pool.py kills media inspection workers (processes, but no twin code in them). Other
# upload tests also inspect in worker processes, forked from one fork server per test run: cheap,
# and the default path, so they run in both passes.
PROCESS_TESTS = ("bench/", "test_cluster.py", "test_cluster_routing.py", "test_outages.py", "test_workers.py", "media/test_pool.py")


def pytest_configure(config) -> None:
    """Gateway processes the tests start keep their fitted bot models in one folder for the run
    (``--bot-fits-dir`` through the environment, which xdist's workers and their subprocesses
    inherit): the first process fits the sample bot, the others load it."""
    if hasattr(config, "workerinput") or "KEFU_BOT_FITS_DIR" in os.environ:
        return
    config.bot_fits_dir = tempfile.mkdtemp(prefix="kefu-test-bot-fits-")
    os.environ["KEFU_BOT_FITS_DIR"] = config.bot_fits_dir


def pytest_unconfigure(config) -> None:
    made = getattr(config, "bot_fits_dir", None)
    if made is not None:
        shutil.rmtree(made, ignore_errors=True)
        del os.environ["KEFU_BOT_FITS_DIR"]


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        path = item.path.as_posix()
        if any(f"/tests/{part}" in path for part in PROCESS_TESTS):
            item.add_marker(pytest.mark.processes)


def make_config(tmp_path, **overrides) -> Config:
    # rate limits high enough for tests that pipeline; the rate-limit tests set their own.
    # Connections are parked after 50 ms quiet (0.5 s in production), so that every socket test
    # also exercises parking and waking between its requests.
    config = Config(
        port=0, metrics_port=0, data_dir=str(tmp_path / "data"), jwt_secret=SECRET, store="memory",
        rate_per_second=10_000.0, rate_burst=10_000, api_rate_per_second=10_000.0, routing="off", park_after_s=0.05,
    )
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


@pytest.fixture(params=["memory", "sqlite"])
def store_kind(request) -> str:
    return request.param


@pytest.fixture
async def gateway(nursery, tmp_path, store_kind) -> Running:
    """A gateway on a free port, on each store kind."""
    running = await nursery.start(serve, make_config(tmp_path, store=store_kind))
    yield running
    running.node.stop()
    with trio.fail_after(10):
        await running.node.stopped()


@pytest.fixture
def start_gateway(nursery, tmp_path):
    """Start a gateway with overridden settings: ``await start_gateway(rate_per_second=5)``."""
    started: list[Running] = []

    async def start(**overrides) -> Running:
        running = await nursery.start(serve, make_config(tmp_path, **overrides))
        started.append(running)
        return running

    yield start
    for running in started:
        running.node.stop()
