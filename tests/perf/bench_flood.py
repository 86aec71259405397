"""stub"""

from typing import Any


async def run(*args: Any) -> Any:
    raise NotImplementedError
