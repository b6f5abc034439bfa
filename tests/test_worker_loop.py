"""A Kafka error of a background task nobody awaits (aiokafka's own commit tasks, during an
outage) is one warning line; any other unretrieved error keeps asyncio's traceback."""

import asyncio
import gc
import logging

from aiokafka.errors import UnknownTopicOrPartitionError

from streamproc.worker import quiet_kafka_task_errors


def _abandon(exc: BaseException, caplog) -> list[logging.LogRecord]:
    async def fail():
        raise exc

    async def main():
        quiet_kafka_task_errors(asyncio.get_running_loop())
        task = asyncio.ensure_future(fail())
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert task.done()
        del task
        gc.collect()  # the unretrieved exception is reported when the task is freed

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        asyncio.run(main())
    return list(caplog.records)


def test_an_abandoned_kafka_error_is_a_warning_without_traceback(caplog):
    records = _abandon(UnknownTopicOrPartitionError(), caplog)
    assert [(r.levelname, r.exc_info) for r in records] == [("WARNING", None)]
    assert "UnknownTopicOrPartitionError" in records[0].getMessage()


def test_any_other_abandoned_error_keeps_its_traceback(caplog):
    records = _abandon(ValueError("a bug"), caplog)
    assert any(r.levelname == "ERROR" and r.exc_info and r.exc_info[0] is ValueError for r in records)
