"""Write billfold_client/_async.py from _sync.py: one hand-written client, two flavours.

python clients/python/scripts/unasync.py          # regenerate
python clients/python/scripts/unasync.py --check  # exit 1 if _async.py is stale
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "billfold_client"

_REPLACEMENTS = [
    (
        '"""The synchronous client. `_async.py` is generated from this file (scripts/unasync.py):\n'
        'edit this one and regenerate."""',
        '"""The async client, made from `_sync.py` by scripts/unasync.py: do not edit."""',
    ),
    ("import time\n", "import asyncio\n"),
    ("from collections.abc import Iterator\n", "from collections.abc import AsyncIterator\n"),
    ("class Billfold:", "class AsyncBillfold:"),
    ("`Billfold(base_url", "`AsyncBillfold(base_url"),
    ("httpx.Client", "httpx.AsyncClient"),
    ("def __enter__(self) -> Billfold:", "async def __aenter__(self) -> AsyncBillfold:"),
    ("def __exit__(", "async def __aexit__("),
    (
        "def close(self) -> None:\n        self._http.close()",
        "async def aclose(self) -> None:\n        await self._http.aclose()",
    ),
    ("        self.close()\n", "        await self.aclose()\n"),
    ("response = self._http.request(", "response = await self._http.request("),
    ("time.sleep(", "await asyncio.sleep("),
    ("Iterator[", "AsyncIterator["),
]


def generate(source: str) -> str:
    for old, new in _REPLACEMENTS:
        if old not in source:
            raise SystemExit(f"unasync: {old!r} not found in _sync.py")
        source = source.replace(old, new)
    # Public methods and _run become coroutines (the constructor and dunders stay as they are).
    source = re.sub(r"\n    def (?!__)(\w+)\(", r"\n    async def \1(", source)
    source = source.replace("return self._run(", "return await self._run(")
    source = source.replace("page = self._run(", "page = await self._run(")
    source = source.replace("        self._run(ops.", "        await self._run(ops.")
    source = re.sub(
        r"yield from (page(?:\[\"\w+\"\])?)\n",
        r"for item in \1:\n                yield item\n",
        source,
    )
    # Formatted as the repository formats code, so the check compares like with like.
    return subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--stdin-filename", "_async.py", "-"],
        input=source,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def main() -> None:
    target = PACKAGE / "_async.py"
    generated = generate((PACKAGE / "_sync.py").read_text())
    if "--check" in sys.argv:
        if target.read_text() != generated:
            print("billfold_client/_async.py is stale: run clients/python/scripts/unasync.py")
            raise SystemExit(1)
        return
    target.write_text(generated)


if __name__ == "__main__":
    main()
