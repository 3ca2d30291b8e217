"""The registry as Prefect tasks open it: the Hub token may come from a Prefect Secret block.

``SLM_HUB_TOKEN_BLOCK`` names the block; it is read on the first Hub call, handed to the Hub client only,
and never logged. Without it the registry reads ``HF_TOKEN`` (registry.service.open_registry).
"""

from __future__ import annotations

from lifecycle.settings import get_settings
from registry.service import Registry
from registry.service import open_registry as _open


def _secret(block: str):
    def read() -> str | None:
        from prefect.blocks.system import Secret

        return Secret.load(block).get()
    return read


def open_registry() -> Registry:
    settings = get_settings()
    block = settings.hub_token_block
    return _open(settings, hub_token=_secret(block) if block else None)
