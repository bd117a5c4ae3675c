"""The configuration users read in README.md is the one the code has."""

from __future__ import annotations

from pathlib import Path

from infra.settings import PROJECT_ROOT, Settings, markdown_table


def test_readme_configuration_table_matches_settings() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert markdown_table() in readme, "run `python -m infra.settings` and paste into README.md"


def test_settings_come_from_tradecore_environment(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TRADECORE_PERSISTENCE", "postgres")
    monkeypatch.setenv("TRADECORE_SQLITE_PATH", "/tmp/x.sqlite")
    settings = Settings()
    assert settings.persistence == "postgres"
    assert settings.sqlite_path == Path("/tmp/x.sqlite")
