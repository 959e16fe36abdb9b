"""`billfold serve --no-worker` in one process under cProfile, every thread profiled (the
event loop's and the consume batcher's), the merged statistics written to OUT at shutdown.

    DATABASE_URL=… .venv/bin/python bench/profiled_serve.py OUT --port 8000

`bench/consume.py --profile OUT` runs the server this way. The profiler slows Python down
several times over, so read the figures it prints beside a profile for where the time goes,
not for how fast it is.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import signal
import threading
from collections.abc import Callable
from typing import Any

import uvicorn

from billfold.app import create_app
from billfold.config import Settings
from billfold.kit.observability import configure_logging

_profiles: list[cProfile.Profile] = []
_lock = threading.Lock()


def _profiled(run: Callable[[threading.Thread], None]) -> Callable[[threading.Thread], None]:
    def wrapper(thread: threading.Thread) -> None:
        profile = cProfile.Profile()
        with _lock:
            _profiles.append(profile)
        profile.enable()
        try:
            run(thread)
        finally:
            profile.disable()

    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    threading.Thread.run = _profiled(threading.Thread.run)  # type: ignore[method-assign,assignment]
    settings = Settings()
    configure_logging(settings.log_json)
    application = create_app(settings, run_worker=False)
    # uvicorn shuts down on SIGTERM, then raises it again under the handler it found: make
    # that one a no-op, so the statistics are written below instead of the process dying.
    signal.signal(signal.SIGTERM, lambda _sig, _frame: None)
    main_profile = cProfile.Profile()
    main_profile.enable()
    try:
        uvicorn.run(application, host="127.0.0.1", port=args.port, log_level="warning")
    finally:
        main_profile.disable()
        stats: Any = pstats.Stats(main_profile)
        with _lock:
            for profile in _profiles:
                stats.add(profile)
        stats.dump_stats(args.out)


if __name__ == "__main__":
    main()
