"""docs/events.md is generated from the event classes and must match them."""

from __future__ import annotations

from api.cli import catalogue


def test_docs_events_md_is_up_to_date() -> None:
    """Changed an event? Run ``python -m api.cli.catalogue`` and commit docs/events.md."""
    expected = catalogue.render()
    current = catalogue.DOC.read_text(encoding="utf-8")
    assert current == expected, (
        "docs/events.md is out of date: run `python -m api.cli.catalogue` and commit it"
    )


def test_every_event_has_a_meaning_and_a_version() -> None:
    for cls in catalogue.all_event_classes():
        doc = catalogue.describe(cls)
        assert doc.meaning, f"{doc.schema.topic} has no docstring saying what it means"
        assert doc.schema.version >= 1
