"""`tradecore kafka`: the topics of the distributed deployment.

`tradecore kafka init` creates every topic the settings name (``infra.kafka.topic_specs``:
partitions, retention) and leaves existing ones as they are, so it is safe to run on
every deploy. `tradecore kafka topics` shows them with their partitions and end offsets.
"""

from __future__ import annotations

import typer

from infra.settings import get_settings

kafka_app = typer.Typer(no_args_is_help=True,
                        help="The Kafka topics of the distributed deployment.")


def _reachable() -> None:
    from streams.worker import Unreachable, check_reachable

    try:
        check_reachable(get_settings(), ("kafka",), timeout_s=3.0)
    except Unreachable as err:
        typer.echo(f"refused: {err}", err=True)
        raise typer.Exit(2) from None


@kafka_app.command("init")
def init() -> None:
    """Create the deployment's topics that do not exist (idempotent): one line per topic,
    its partitions and whether it was created or existed."""
    from confluent_kafka import KafkaException

    from infra.kafka import ensure_topics, topic_specs

    _reachable()
    settings = get_settings()
    try:
        done = ensure_topics(settings, timeout_s=15.0)
    except KafkaException as err:
        typer.echo(f"refused: TRADECORE_KAFKA_BOOTSTRAP={settings.kafka_bootstrap!r}: "
                   f"topics not created ({err.args[0].str()})", err=True)
        raise typer.Exit(2) from None
    width = max(len(s.name) for s in topic_specs(settings))
    for spec in topic_specs(settings):
        typer.echo(f"{spec.name:<{width}}  {spec.partitions:>3} partitions  {done[spec.name]}")


@kafka_app.command("topics")
def list_topics() -> None:
    """Each topic of the deployment: partitions and end offset per partition (taken from
    a fetch response: the dev broker answers the offset query wrongly)."""
    from infra.kafka import admin, fetched_high_watermarks, topic_specs

    _reachable()
    settings = get_settings()
    found = admin(settings).list_topics(timeout=10).topics
    specs = [(spec, found.get(spec.name)) for spec in topic_specs(settings)]
    ends = fetched_high_watermarks(
        settings, {(spec.name, p): 0 for spec, meta in specs if meta is not None
                   for p in meta.partitions}, group="tradecore-cli-topics", timeout_s=10.0)
    for spec, meta in specs:
        if meta is None:
            typer.echo(f"{spec.name}  missing (run `tradecore kafka init`)")
            continue
        marks = [ends.get((spec.name, p)) for p in sorted(meta.partitions)]
        shown = " ".join("?" if m is None else str(m) for m in marks)
        typer.echo(f"{spec.name}  {len(marks)} partitions  end offsets {shown}  "
                   f"total {sum(m or 0 for m in marks)}")
