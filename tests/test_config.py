"""Configuration beyond the README's table: what makes a configuration unusable, and secrets in
URLs never shown."""

from __future__ import annotations

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
