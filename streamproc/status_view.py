"""``streamproc status``: a running worker's ``GET /status``, as a readable table or raw JSON."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

DEFAULT_URL = "http://127.0.0.1:9464"


class StatusError(Exception):
    """The worker could not be asked, or did not answer with its status."""


def status_url(url: str) -> str:
    """``http://host:port`` (or the worker's ``.../status``, ``.../metrics`` or ``.../healthz``,
    as one may copy it from a scrape config) -> the status endpoint."""
    if "://" not in url:
        url = "http://" + url
    url = url.rstrip("/")
    for view in ("/metrics", "/healthz"):
        if url.endswith(view):
            url = url[:-len(view)]
    return url if url.endswith("/status") else url + "/status"


def fetch(url: str, timeout: float = 5.0) -> bytes:
    """The body of the worker's /status (JSON bytes); StatusError with one readable line otherwise."""
    target = status_url(url)
    try:
        with urllib.request.urlopen(target, timeout=timeout) as resp:
            body = resp.read()
    except urllib.error.HTTPError as exc:
        raise StatusError(f"{target} answered {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason.strerror if isinstance(exc.reason, OSError) and exc.reason.strerror else exc.reason
        raise StatusError(f"cannot reach a worker at {target}: {reason}") from None
    except (OSError, ValueError) as exc:  # timeouts, resets, malformed URLs
        raise StatusError(f"cannot reach a worker at {target}: {exc}") from None
    try:
        parsed = json.loads(body)
    except ValueError:
        raise StatusError(f"{target} did not answer with JSON (is it a streamproc worker?)") from None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("models"), list):
        raise StatusError(f"{target} did not answer with a worker status (no models list)")
    return body


def _window(w) -> str:
    if not w:
        return "-"
    size = w.get("size")
    return f"#{w.get('index', '?')} {w.get('fill', 0)}/{size}" if size else f"#{w.get('index', '?')} {w.get('fill', 0)} ({w.get('kind', 'time')})"


def _top_psi(latest: dict, n: int = 3) -> str:
    # (JSON has no NaN or infinity: the worker's orjson writes them as null)
    values = {name: value for name, value in latest.items() if isinstance(value, (int, float))}
    top = sorted(values.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
    return ", ".join(f"{name} {value:.3g}" for name, value in top) or "-"


COLUMNS = ("MODEL", "VERSION", "EVENTS", "REFERENCE", "WARMING UP", "WINDOW", "TOP PSI", "DRIFT")


def _warming(model: dict) -> str:
    """yes / no; "yes, 1 in N" when the warm-up keeps every N-th event (thinned for memory)."""
    if not model.get("warming_up"):
        return "no"
    stride = (model.get("warmup") or {}).get("stride", 1)
    return f"yes, 1 in {stride}" if stride > 1 else "yes"


def render(status: dict) -> str:
    """A header line and a table, one row per model version."""
    published = status.get("published") or {}
    partitions = status.get("partitions") or []
    lines = [
        f"ready: {'yes' if status.get('ready') else 'no'}   partitions: {len(partitions)}   published: "
        f"{published.get('alerts', 0)} alerts, {published.get('retrain_requests', 0)} retrain requests, "
        f"{published.get('dead_letters', 0)} dead letters"
        + (f"   packed: {status['packed_models']} models (their saved state loaded, no event yet)"
           if status.get("packed_models") else "")
    ]
    models = status.get("models") or []
    if not models:
        lines.append("no models yet (no prediction events applied" + (" since the start)" if status.get("packed_models") else ")"))
        return "\n".join(lines)
    rows = [COLUMNS]
    for m in models:
        rows.append((
            str(m.get("model_id", "?")), str(m.get("model_version", "?")), str(m.get("events", 0)),
            str(m.get("reference") or "-"), _warming(m), _window(m.get("window")),
            _top_psi(m.get("latest_psi") or {}), str(len(m.get("active_drift") or [])),
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    numeric = {2, 7}
    lines.append("")
    for r in rows:
        cells = [c.rjust(widths[i]) if i in numeric else c.ljust(widths[i]) for i, c in enumerate(r)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
