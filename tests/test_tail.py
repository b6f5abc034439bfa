"""``streamproc alerts tail`` on the real broker: what it prints, and that a message it cannot
read is said on stderr and skipped (one ended it, and every restart from the beginning too)."""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from streamproc.tail import tail

from .conftest import unique_topics
from .test_forward import alert
from .test_integration import produce

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("as_json", [False, True])
def test_tail_skips_what_is_not_an_event_and_goes_on(bootstrap, capsys, as_json):
    topic = unique_topics()["alerts"]
    good = alert()
    partial = {"alert_id": "partial-1", "model_id": "fraud"}  # an object without what the line shows
    produce(bootstrap, topic, [b"not json", None, b"[1, 2]", json.dumps(partial).encode(), json.dumps(good).encode()],
            keys=[b"k"] * 5)  # one partition: in this order

    async def main():
        stop = asyncio.Event()
        task = asyncio.create_task(tail(bootstrap, [topic], from_beginning=True, as_json=as_json, stop=stop))
        out = err = ""
        while good["alert_id"][:8] not in out:  # (printed last)
            assert not task.done(), task.exception()
            await asyncio.sleep(0.05)
            captured = capsys.readouterr()
            out, err = out + captured.out, err + captured.err
        stop.set()
        await task
        return out, err

    out, err = asyncio.run(main())
    lines = out.splitlines()
    assert len(lines) == 2
    assert json.loads(lines[0]) == partial  # (the text view falls back to its JSON)
    assert (json.loads(lines[1]) == good) if as_json else lines[1].startswith("ALERT   CRITICAL fraud/default")
    for offset, why in ((0, "not JSON"), (1, "empty"), (2, "not a JSON object")):
        assert re.search(rf"^streamproc: skipped {topic}\[\d\]@{offset}: {why}$", err, re.M), err
