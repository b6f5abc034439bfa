"""Reading the output topics: readable one-line rendering of alerts and retrain requests."""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime, timezone
from typing import Callable, Optional

import orjson

from . import kafka


def _time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_event(event: dict) -> str:
    """One readable line for an alert or a retrain request."""
    if "alert_id" in event:
        w = event["window"]
        what = event["feature"] or event["signal"].replace("_", " ")
        return (
            f"ALERT   {event['severity'].upper():8} {event['model_id']}/{event['model_version']}  "
            f"{event['type'].replace('_', ' ')} on {what}  {event['detector']}={event['statistic']:.4g} "
            f"(threshold {event['threshold']:.4g})  window #{w['index']} {_time(w['start'])}..{_time(w['end'])} "
            f"({w['count']} events)  id {event['alert_id'][:8]}"
        )
    if "request_id" in event:
        w = event["data_window"]
        feats = ", ".join(event["drifted_features"]) or "-"
        return (
            f"RETRAIN {event['model_id']}/{event['model_version']}  drifted features: {feats}  "
            f"data {_time(w['start'])}..{_time(w['end'])}  reason: {event['reason']}  "
            f"alerts {', '.join(a[:8] for a in event['alert_ids'])}"
        )
    return orjson.dumps(event).decode()


def _event(msg) -> Optional[dict]:
    """The JSON object a message holds; None, said on stderr, when it holds none (one bad
    message ended the tail, and every restart from the beginning ended on it again)."""
    try:
        event = orjson.loads(msg.value) if msg.value is not None else None
    except orjson.JSONDecodeError:
        event = None
    if isinstance(event, dict):
        return event
    why = "empty" if msg.value is None else "not JSON" if event is None else "not a JSON object"
    print(f"streamproc: skipped {msg.topic}[{msg.partition}]@{msg.offset}: {why}", file=sys.stderr, flush=True)
    return None


def _line(event: dict) -> str:
    """``format_event``, or the event's JSON when it lacks what the line shows."""
    try:
        return format_event(event)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError, OSError):
        return orjson.dumps(event).decode()


async def tail(bootstrap: str, topics: list[str], from_beginning: bool = False, as_json: bool = False,
               on_event: Optional[Callable[[str, dict], None]] = None, stop: Optional[asyncio.Event] = None,
               options: Optional[dict] = None) -> None:
    """Print (or hand to ``on_event``) every event on ``topics`` until ``stop`` is set.

    ``options``: aiokafka security options (``kafka.client_options``)."""
    consumer = kafka.consumer(bootstrap, *topics, group_id=None,
                              auto_offset_reset="earliest" if from_beginning else "latest", **(options or {}))
    try:
        await consumer.start()
    except BaseException:
        await consumer.stop()  # closes what start() opened before it failed
        raise
    try:
        while stop is None or not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200)
            for tp, msgs in batch.items():
                for m in msgs:
                    event = _event(m)
                    if event is None:
                        continue
                    if on_event is not None:
                        on_event(tp.topic, event)
                    else:
                        print(orjson.dumps(event).decode() if as_json else _line(event), flush=True)
    finally:
        await consumer.stop()
