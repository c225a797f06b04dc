"""POSTing an event envelope to a webhook endpoint (httpx); any answer but 2xx is a failure."""

from __future__ import annotations

import httpx

from trustyard.remote.errors import RemoteError

_ERROR_BODY = 512  # bytes of a refusal kept for `trustyard events list`


class WebhookFailed(RemoteError):
    """The endpoint was unreachable, too slow, or answered something other than 2xx."""


class WebhookPoster:
    """One connection pool for every endpoint; the timeout is each endpoint's own."""

    def __init__(self) -> None:
        self.client = httpx.AsyncClient(follow_redirects=False)

    async def __call__(
        self, url: str, body: bytes, headers: dict[str, str], seconds: float
    ) -> None:
        """POST `body`; `seconds` is httpx's timeout (connect, each read), per endpoint."""
        try:
            async with self.client.stream(
                "POST", url, content=body, headers=headers, timeout=seconds
            ) as response:
                if 200 <= response.status_code < 300:
                    return
                text = b""
                async for chunk in response.aiter_bytes():
                    text += chunk
                    if len(text) >= _ERROR_BODY:
                        break
        except httpx.HTTPError as exc:
            raise WebhookFailed(f"{type(exc).__name__}: {exc}"[:_ERROR_BODY]) from None
        snippet = text[:_ERROR_BODY].decode("utf-8", "replace").strip()
        raise WebhookFailed(f"HTTP {response.status_code}: {snippet}".strip(": "))

    async def close(self) -> None:
        await self.client.aclose()
