"""POST the message; anything but a 2xx answer in time is a failure payhook retries."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx

__all__ = ["NotifyFailed", "post"]


class NotifyFailed(Exception):
    """The message was not accepted. The text names the host only: webhook URLs are secrets."""


def post(url: str, text: str, timeout: float) -> None:
    host = urlsplit(url).hostname or "the notification URL"
    try:
        response = httpx.post(url, json={"text": text}, timeout=timeout)
    except httpx.TimeoutException:
        raise NotifyFailed(f"{host} did not answer within {timeout:g} s") from None
    except httpx.HTTPError as exc:
        raise NotifyFailed(f"could not reach {host}: {type(exc).__name__}") from None
    if not response.is_success:
        raise NotifyFailed(f"{host} answered {response.status_code}")
