"""Layer 2: the ComfyUI clients (blocking and asyncio) and their event streams."""

from ..protocol.types import RetryPolicy
from .aio import AsyncClient
from .base import ClientOptions
from .sync import Client

__all__ = ["AsyncClient", "Client", "ClientOptions", "RetryPolicy"]
