"""Configuration beyond the README's table: what makes a configuration unusable, and secrets in
URLs never shown."""

from __future__ import annotations

import os

from gateway.config import Config


def test_a_password_in_a_store_or_bus_url_is_masked_in_the_startup_settings():
    shown = Config(store="postgresql://kefu:s3cret@db:5432/kefu", bus="redis://:hunter2@redis:6379/0").describe()
    assert shown["store"] == "postgresql://kefu:***@db:5432/kefu" and shown["bus"] == "redis://:***@redis:6379/0"
    assert "s3cret" not in repr(shown) and "hunter2" not in repr(shown)
    assert Config(store="postgresql://kefu@db/kefu").describe()["store"] == "postgresql://kefu@db/kefu"  # no password: as given


def test_the_defaults_are_one_process_on_sqlite_with_the_local_bus():
    config = Config()
    assert (config.store, config.bus, config.workers) == ("sqlite", "local", 1)
    assert not config.shared_store and not config.shared_bus and config.problems() == []


def test_the_pages_websocket_url_is_a_websocket_url():
    assert Config(web_ws_url="wss://kefu.example.com/ws").problems() == []
    [problem] = Config(web_ws_url="https://kefu.example.com/ws").problems()
    assert problem == "--web-ws-url 'https://kefu.example.com/ws': expected a ws:// or wss:// URL"


def test_media_cpus_is_a_cpu_list_of_this_machine():
    assert Config(media_cpus="1,3-4").media_cpu_set == {1, 3, 4} and Config().media_cpu_set is None
    cpus = os.cpu_count() or 1
    assert Config(media_cpus=f"0-{cpus - 1}").problems() == []
    for bad, says in [("one", "not a CPU number"), ("2-", "not a CPU number"), ("3-1", "empty range"), ("0,,1", "not a CPU number"),
                      (str(cpus), f"this machine's CPUs are 0-{cpus - 1}")]:
        [problem] = Config(media_cpus=bad).problems()
        assert problem.startswith(f"--media-cpus {bad!r}: ") and says in problem, problem
