"""``streamproc alerts forward``: POST alerts and retrain requests to a webhook, losing none.

* One consumer group reads the alerts and retrain topics. A message's offset is committed
  right after the webhook accepted it (2xx), never before, so a restart resumes at the first
  message not yet delivered: at-least-once. Messages are POSTed one at a time, in order per partition
  (the worker keys both topics by model id, so in order per model). The first time the group
  owns a partition it commits its starting position (the end of the topic, or with
  ``from_beginning`` its start), so what arrives while the forwarder is down is forwarded
  when it comes back. A committed position the log no longer holds (retention removed those
  messages, or the topic was made again) is read from the log's beginning, with a line on
  stderr: forwarded again rather than skipped.
* The body is the event exactly as it is on the topic (JSON, ``Content-Type:
  application/json``), with headers ``Idempotency-Key`` (the alert or request id) and
  ``X-Streamproc-Event`` (``alert`` or ``retrain_request``).
* Connection errors, timeouts, 5xx and 429 are retried with exponential backoff (``base``
  doubling per attempt up to ``cap`` seconds), or after ``Retry-After`` when the answer has
  one. After ``max_retries`` retries of one message the forwarder gives up: it commits what
  was delivered before that message, and stops with exit code 1 and one line saying which
  message failed and why. Nothing is skipped; restarting it (by hand, or by a supervisor)
  retries that message. Any other answer (3xx, 4xx other than 429) means the request
  itself is wrong, so it is not retried: the forwarder stops the same way at once.
* De-duplication: ids forwarded recently (the last ``DEDUPE_SIZE``, an LRU) are not POSTed
  again, so an alert the worker published twice (a replay after a crash repeats alerts with
  the same ids) reaches the webhook once. Across a forwarder restart a message POSTed just
  before a crash, but not yet committed, is POSTed again: receivers should also
  de-duplicate by ``Idempotency-Key``.
* A message that is not a JSON object with an ``alert_id`` or ``request_id`` cannot be an
  alert or a retrain request: it is reported on stderr, counted, and skipped.
* SIGTERM or SIGINT stops it cleanly (exit 0): a POST in flight or a retry wait is abandoned
  without committing that message, and the offsets delivered so far are committed.
"""

from __future__ import annotations

import asyncio
import email.utils
import re
import signal
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Awaitable, Callable, Optional

import orjson
from aiokafka import ConsumerRebalanceListener
from aiokafka.errors import NoOffsetForPartitionError, OffsetOutOfRangeError

from . import kafka


def _user_agent() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"streamproc/{version('streamproc')}"
    except PackageNotFoundError:
        return "streamproc"


USER_AGENT = _user_agent()
DEDUPE_SIZE = 10_000
MAX_RETRY_AFTER = 600.0  # seconds; a longer Retry-After is cut to this


class GiveUp(Exception):
    """A message could not be delivered; the forwarder stops without committing it."""


class RecentIds:
    """A bounded set of the most recently used ids (least recently used evicted first)."""

    def __init__(self, size: int = DEDUPE_SIZE):
        if size < 1:
            raise ValueError("size must be at least 1")
        self.size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def seen(self, ident: str) -> bool:
        """Whether ``ident`` is among the recent ids (and if so, make it the most recent)."""
        if ident in self._ids:
            self._ids.move_to_end(ident)
            return True
        return False

    def add(self, ident: str) -> None:
        self._ids[ident] = None
        self._ids.move_to_end(ident)
        while len(self._ids) > self.size:
            self._ids.popitem(last=False)

    def __len__(self) -> int:
        return len(self._ids)


def backoff_delay(attempt: int, base: float = 0.5, cap: float = 30.0) -> float:
    """Seconds to wait before retry number ``attempt + 1``: base, 2·base, 4·base, ... up to cap."""
    return min(cap, base * 2.0 ** min(attempt, 64))  # (2 ** 1024 is past a float)


def parse_retry_after(value: Optional[str], now: Optional[float] = None) -> Optional[float]:
    """Seconds to wait from a Retry-After header (seconds, or an HTTP date); None if absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when is None or when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def retryable(status: int) -> bool:
    """5xx and 429 may succeed later; other failures will not."""
    return status == 429 or 500 <= status <= 599


@dataclass
class Answer:
    """What the webhook said: an HTTP status and its Retry-After header, if any."""

    status: int
    reason: str = ""
    retry_after: Optional[str] = None


Post = Callable[[bytes, dict], Awaitable[Answer]]
# wait(seconds) -> False when the forwarder was asked to stop meanwhile
Wait = Callable[[float], Awaitable[bool]]


@dataclass
class Delivery:
    delivered: bool  # False: stopped before it was delivered
    attempts: int


async def deliver(post: Post, body: bytes, headers: dict, what: str, max_retries: int, wait: Wait,
                  base: float = 0.5, cap: float = 30.0, warn: Callable[[str], None] = lambda m: None) -> Delivery:
    """POST one message, retrying as the module docstring says; GiveUp when it cannot be delivered."""
    attempt = 0
    while True:
        try:
            answer = await post(body, headers)
        except _invalid_url() as exc:  # (a ClientError, but no retry will mend it)
            raise GiveUp(f"{what}: the webhook's URL is not valid ({exc})") from None
        except (OSError, asyncio.TimeoutError, _client_errors()) as exc:
            problem = f"cannot reach the webhook ({type(exc).__name__}{': ' + str(exc) if str(exc) else ''})"
            delay = backoff_delay(attempt, base, cap)
        else:
            if 200 <= answer.status <= 299:
                return Delivery(True, attempt + 1)
            problem = f"webhook answered {answer.status}{' ' + answer.reason if answer.reason else ''}"
            if not retryable(answer.status):
                raise GiveUp(f"{what}: {problem} (not retried: the receiver refuses the request)")
            hinted = parse_retry_after(answer.retry_after)
            delay = hinted if hinted is not None else backoff_delay(attempt, base, cap)
        if attempt >= max_retries:
            raise GiveUp(f"{what}: {problem}; gave up after {attempt + 1} attempt(s)")
        attempt += 1
        warn(f"{what}: {problem}; retry {attempt}/{max_retries} in {delay:.3g} s")
        if not await wait(delay):
            return Delivery(False, attempt)


def _client_errors():
    import aiohttp

    return aiohttp.ClientError


def _invalid_url():
    import aiohttp

    return aiohttp.InvalidURL


MAX_ID_LENGTH = 256  # streamproc's ids are UUIDs (36 characters)
_ID = re.compile(rf"[\x21-\x7e]{{1,{MAX_ID_LENGTH}}}")


def identify(value: Optional[bytes]) -> tuple[str, str]:
    """(kind, id) of an alert or retrain request; ValueError saying why it is neither."""
    if value is None:
        raise ValueError("empty message")
    try:
        event = orjson.loads(value)
    except orjson.JSONDecodeError:
        raise ValueError("not JSON") from None
    if not isinstance(event, dict):
        raise ValueError("not a JSON object")
    for kind, field_name in (("alert", "alert_id"), ("retrain_request", "request_id")):
        value = event.get(field_name)
        if isinstance(value, str) and value:
            # It goes in the Idempotency-Key header: a control character or a huge id could not
            # be sent at all, and stopped the forwarder on that message at every restart.
            if not _ID.fullmatch(value):
                raise ValueError(f"{field_name} is not an id (at most {MAX_ID_LENGTH} printable ASCII characters)")
            return kind, value
    raise ValueError("neither an alert (alert_id) nor a retrain request (request_id)")


@dataclass
class Counts:
    forwarded: int = 0
    duplicates: int = 0
    retries: int = 0
    skipped: int = 0

    def line(self) -> str:
        return (f"forwarded {self.forwarded}, duplicates not forwarded {self.duplicates}, "
                f"retries {self.retries}, unreadable messages skipped {self.skipped}")


def _say(message: str) -> None:
    print(f"streamproc: {message}", file=sys.stderr, flush=True)


class Forwarder:
    """The consume, POST, commit loop (see the module docstring)."""

    def __init__(self, consumer, post: Post, max_retries: int = 8, base: float = 0.5, cap: float = 30.0,
                 dedupe_size: int = DEDUPE_SIZE, out=None, from_beginning: bool = False):
        self.consumer = consumer
        self.from_beginning = from_beginning  # where a partition without a committed offset starts
        self.post = post
        self.max_retries = max_retries
        self.base = base
        self.cap = cap
        self.recent = RecentIds(dedupe_size)
        self.counts = Counts()
        self.stop = asyncio.Event()
        self.positions: dict = {}  # partition -> next offset to commit (everything before it delivered)
        self.anchored: set = set()  # partitions known to have a committed offset
        self.out = out

    async def wait(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self.stop.wait(), seconds)
        except asyncio.TimeoutError:
            return True
        return False

    async def _until_stopped(self, coro):
        """(True, result) or (False, None) when stop came first (the coroutine is cancelled)."""
        task = asyncio.ensure_future(coro)
        stopper = asyncio.ensure_future(self.stop.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if task.done():
            return True, task.result()
        task.cancel()
        try:
            await task
        except BaseException:  # noqa: BLE001 - cancelled (or failed while cancelled): not delivered either way
            pass
        return False, None

    async def _post_or_stop(self, body: bytes, headers: dict) -> Answer:
        finished, answer = await self._until_stopped(self.post(body, headers))
        if not finished:
            raise _Stopped
        return answer

    async def handle(self, msg) -> bool:
        """Forward one message; False if asked to stop before it was delivered."""
        where = f"{msg.topic}[{msg.partition}] offset {msg.offset}"
        try:
            kind, ident = identify(msg.value)
        except ValueError as exc:
            self.counts.skipped += 1
            _say(f"skipped {where}: {exc}")
            return True
        key = f"{kind}:{ident}"
        if self.recent.seen(key):
            self.counts.duplicates += 1
            return True
        headers = {"Content-Type": "application/json", "Idempotency-Key": ident, "X-Streamproc-Event": kind,
                   "User-Agent": USER_AGENT}
        what = f"{kind.replace('_', ' ')} {ident} ({where})"

        def warn(message: str) -> None:
            self.counts.retries += 1
            _say(message)

        try:
            result = await deliver(self._post_or_stop, msg.value, headers, what, self.max_retries, self.wait,
                                   self.base, self.cap, warn)
        except _Stopped:
            return False
        if not result.delivered:
            return False
        self.recent.add(key)
        self.counts.forwarded += 1
        if self.out is not None:
            print(f"forwarded {kind.replace('_', ' ')} {ident} ({where})", file=self.out, flush=True)
        return True

    async def commit(self, partitions: Optional[set] = None) -> None:
        """Commit the delivered positions of ``partitions`` (default: those this forwarder owns)."""
        partitions = self.consumer.assignment() if partitions is None else partitions
        offsets = {tp: self.positions.pop(tp) for tp in list(self.positions) if tp in partitions}
        if not offsets:
            return
        try:
            await asyncio.wait_for(self.consumer.commit(offsets), 15.0)
            self.anchored.update(offsets)
        except Exception as exc:  # noqa: BLE001 - a rebalance or broker trouble: the next owner forwards them again
            _say(f"could not commit offsets ({type(exc).__name__}: {exc}); those messages may be forwarded again")

    async def _next_batch(self):
        """``_until_stopped(getmany)``, placing partitions the consumer found no position for.

        The consumer has no reset strategy of its own (``auto_offset_reset="none"``), because the
        two cases want different ones: a partition without a committed offset starts at the end
        (or the beginning, with ``from_beginning``); a committed position out of the log's range
        starts at the beginning, since the messages after it are there and none was forwarded.
        """
        try:
            return await self._until_stopped(self.consumer.getmany(timeout_ms=500))
        except (NoOffsetForPartitionError, OffsetOutOfRangeError) as exc:
            try:
                if isinstance(exc, NoOffsetForPartitionError):
                    await self._start_at(exc.args[0], self.from_beginning)
                else:
                    for tp, offset in exc.args[0].items():
                        await self._out_of_range(tp, offset)
            except Exception as trouble:  # noqa: BLE001 - broker trouble: the next poll raises it again
                _say(f"could not place a partition ({type(trouble).__name__}: {trouble}); will retry")
        return True, {}

    async def _start_at(self, tp, beginning: bool) -> None:
        if tp in self.consumer.assignment():
            await asyncio.wait_for((self.consumer.seek_to_beginning if beginning else self.consumer.seek_to_end)(tp), 15.0)

    async def _out_of_range(self, tp, offset: int) -> None:
        _say(f"committed offset {offset} of {tp.topic}[{tp.partition}] is out of range of its log (retention removed "
             "those messages, or the topic was made again): reading it from its beginning")
        await self._start_at(tp, True)

    async def _anchor(self, batch: dict) -> None:
        """Give every partition this forwarder owns a committed position, once, and check the
        committed positions it starts from.

        A group without one starts at the end (without --from-beginning) every time it starts,
        so a restart would skip whatever arrived while it was down. A partition with messages in
        ``batch`` is anchored by the commit after them. A committed position past the log's end
        (a topic made again: some brokers answer its fetches with nothing rather than an error)
        starts at the log's beginning, as one the broker reports out of range does.
        """
        for tp in self.consumer.assignment() - self.anchored:
            if tp in batch:
                continue
            try:
                committed = await asyncio.wait_for(self.consumer.committed(tp), 15.0)
                if committed is None:
                    await self._start_at(tp, self.from_beginning)
                    self.positions.setdefault(tp, await asyncio.wait_for(self.consumer.position(tp), 15.0))
                else:
                    ends = await asyncio.wait_for(self.consumer.end_offsets([tp]), 15.0)
                    if committed > ends[tp]:
                        await self._out_of_range(tp, committed)
            except Exception as exc:  # noqa: BLE001 - broker trouble: try again after the next poll
                _say(f"could not read the committed offset of {tp.topic}[{tp.partition}] ({type(exc).__name__}); will retry")
                continue
            self.anchored.add(tp)

    async def run(self) -> None:
        """Until ``stop`` is set; GiveUp (after committing what was delivered) when a message fails."""
        try:
            while not self.stop.is_set():
                finished, batch = await self._next_batch()
                if not finished:
                    break
                for tp, msgs in batch.items():
                    if msgs:  # a stop or failure before the first of them resumes there
                        self.positions[tp] = msgs[0].offset
                await self._anchor(batch)
                for tp, msgs in batch.items():
                    for msg in msgs:
                        if self.stop.is_set() or tp not in self.consumer.assignment():
                            break
                        forwarded = self.counts.forwarded
                        if not await self.handle(msg):
                            break
                        self.positions[tp] = msg.offset + 1
                        if self.counts.forwarded != forwarded:
                            await self.commit()  # a crash now does not POST it again
                await self.commit()
        finally:
            await self.commit()


class _Stopped(Exception):
    pass


class CommitOnRevoke(ConsumerRebalanceListener):
    """Commit what was delivered from partitions that move to another forwarder of the group."""

    def __init__(self, forwarder: Forwarder):
        self.forwarder = forwarder

    async def on_partitions_revoked(self, revoked) -> None:
        await self.forwarder.commit(set(revoked))
        self.forwarder.anchored.difference_update(revoked)

    async def on_partitions_assigned(self, assigned) -> None:
        pass


async def forward(bootstrap: str, webhook: str, topics: list[str], group_id: str, from_beginning: bool = False,
                  max_retries: int = 8, timeout: float = 10.0, options: Optional[dict] = None, partitions: int = 4,
                  base: float = 0.5, cap: float = 30.0) -> Counts:
    """Run the forwarder until SIGTERM/SIGINT; GiveUp when a message cannot be delivered."""
    import aiohttp

    options = options or {}
    consumer = kafka.consumer(bootstrap, group_id=group_id, auto_offset_reset="none",
                              session_timeout_ms=10_000, heartbeat_interval_ms=1_000, **options)
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout))

    async def post(body: bytes, headers: dict) -> Answer:
        async with session.post(webhook, data=body, headers=headers, allow_redirects=False) as resp:
            await resp.read()
            return Answer(resp.status, resp.reason or "", resp.headers.get("Retry-After"))

    forwarder = Forwarder(consumer, post, max_retries, base, cap, out=sys.stdout, from_beginning=from_beginning)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):  # (also while the topics are made: a stop then is a clean one)
        loop.add_signal_handler(sig, forwarder.stop.set)
    try:
        made, _ = await forwarder._until_stopped(kafka.ensure_topics(bootstrap, topics, partitions, timeout=15.0,
                                                                     options=options))
        if not made:
            return forwarder.counts
        consumer.subscribe(topics, listener=CommitOnRevoke(forwarder))
        started, _ = await forwarder._until_stopped(consumer.start())
        if started:
            _say(f"forwarding {', '.join(topics)} from {bootstrap} to {webhook} as group {group_id}")
            await forwarder.run()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await session.close()
        await consumer.stop()
    return forwarder.counts
