"""The dev broker's workaround for Faust table recovery (switched on only for it).

Faust restores a table by reading its changelog up to the end offsets it asks the
consumer for (``Recovery._build_highwaters`` -> ``consumer.highwaters``, aiokafka's
``end_offsets``: ListOffsets LATEST). The dev broker (Tansu) answers ListOffsets LATEST
with the start of the last stored batch + 1 (``../shared/KAFKA.md``, fault 2), so a
restarted worker would stop recovering early and run on a stale table. On the dev broker
the worker's consumer asks the broker the way that is right there: the high watermark of
a fetch response (:func:`infra.kafka.fetched_high_watermarks`).

This reaches inside Faust (an instance attribute replaces a consumer method), so it
lives here with a test (tests/infra/test_faust_dev.py) that pins the call it relies on.
Apache Kafka never gets it (``TRADECORE_KAFKA_DEV_BROKER`` is false there).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from infra.kafka import fetched_high_watermarks
from infra.settings import Settings

log = logging.getLogger("tradecore.faust_dev")


def recover_from_fetched_highwaters(app: Any, settings: Settings) -> None:
    """Make ``app``'s consumer report end offsets from fetch responses (dev broker only)."""
    if not settings.kafka_dev_broker:
        return
    consumer = app.consumer
    asked = consumer.highwaters

    async def highwaters(*partitions: Any) -> Mapping[Any, int]:
        starts = {(tp.topic, tp.partition): 0 for tp in partitions}
        marks = await asyncio.get_running_loop().run_in_executor(
            None, lambda: fetched_high_watermarks(settings, starts,
                                                  group=f"{app.conf.id}-highwaters"))
        missing = [tp for tp in partitions if (tp.topic, tp.partition) not in marks]
        answered = dict(await asked(*missing)) if missing else {}
        return {tp: marks.get((tp.topic, tp.partition), answered.get(tp) or 0)
                for tp in partitions}

    consumer.highwaters = highwaters
    log.info("dev broker: table recovery reads end offsets from fetch responses")
