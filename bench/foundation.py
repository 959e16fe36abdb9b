"""Foundation benchmark: registration latency with and without the inline Stripe call, jobs
per second through the worker and its latency from enqueue to start. Real parts: uvicorn over
HTTP, localstripe, and SQLite or a throwaway PostgreSQL.
Prints figures; asserts nothing about speed.

    .venv/bin/python bench/foundation.py [--db sqlite|postgresql] [-n 200]
        [--registration-only | --jobs-only] [--jobs 5000] [--threads 1,2,4,8]
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
import time
from datetime import timedelta
from typing import Any

import httpx
from harness import database, report, served, settings_for

from billfold import migrations
from billfold.customers import service
from billfold.jobs.queue import enqueue
from billfold.jobs.worker import JobKind, Worker, WorkerSettings
from billfold.kit.observability import configure_logging
from billfold.registry import build_services, build_worker
from billfold.services import Services
from billfold.standin import LocalStripe


def registration_latency(base: str, n: int, label: str) -> list[float]:
    samples = []
    with httpx.Client(base_url=base, timeout=30) as http:
        for i in range(n):
            body = {
                "name": "Bench",
                "email": f"{label}-{i}-{time.time_ns()}@example.com",
                "password": "bench-password-1",
            }
            started = time.perf_counter()
            response = http.post("/users", json=body)
            samples.append(time.perf_counter() - started)
            assert response.status_code == 201, response.text
    return samples


def _worker_settings(**overrides: Any) -> WorkerSettings:
    values: dict[str, Any] = {
        "lease": timedelta(seconds=60),
        "backoff_base": 1,
        "backoff_max": 1,
        "poll_seconds": 0.01,
    }
    return WorkerSettings(**(values | overrides))


def job_throughput(services: Services, n: int, workers: int) -> tuple[float, float]:
    """Jobs/s through `workers` worker threads, on a no-op handler: the queue's own cost;
    and the process's CPU milliseconds per job (the figure a busy machine leaves standing)."""
    kinds: dict[str, JobKind[None]] = {"bench.noop": JobKind(lambda _c, _p: None)}
    with services.db.transaction() as session:
        for i in range(n):
            enqueue(session, "bench.noop", {"i": i})
    pool = [Worker(services.db, kinds, None, _worker_settings()) for _ in range(workers)]
    started, cpu = time.perf_counter(), time.process_time()
    threads = [threading.Thread(target=w.run_until_idle, args=(n,)) for w in pool]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return n / (time.perf_counter() - started), (time.process_time() - cpu) * 1000 / n


def job_latency(services: Services, n: int, *, wakeup: bool) -> list[float]:
    """Seconds from an enqueue's commit to its handler starting, one job at a time, with a
    worker that idles as `billfold worker` does (polling every 0.5 s; `wakeup`: woken by
    LISTEN/NOTIFY on PostgreSQL, by the enqueue itself in-process on SQLite)."""
    started: list[float] = []
    ran = threading.Event()

    def note_start(_context: None, _payload: dict[str, Any]) -> None:
        started.append(time.perf_counter())
        ran.set()

    kinds: dict[str, JobKind[None]] = {"bench.latency": JobKind(note_start)}
    worker = Worker(services.db, kinds, None, _worker_settings(poll_seconds=0.5, wakeup=wakeup))
    stop = threading.Event()
    thread = worker.start_in_thread(stop)
    if wakeup and services.db.dialect == "postgresql":
        worker.wakeup.listening.wait(10)
    time.sleep(0.6)  # the worker has looked once and is idle
    samples = []
    for i in range(n):
        ran.clear()
        with services.db.transaction() as session:
            enqueue(session, "bench.latency", {"i": i})
            session.flush()
            committing = time.perf_counter()
        if not ran.wait(10):
            raise RuntimeError("the job did not run within 10 s")
        samples.append(started[-1] - committing)
        time.sleep(0.05 + (i % 7) * 0.013)  # idle again, at no fixed phase of the poll
    stop.set()
    thread.join(timeout=10)
    return samples


def link_throughput(services: Services, n: int) -> float:
    """Stripe customer links per second through one worker (Stripe-bound: find + create)."""
    with services.db.transaction() as session:
        for i in range(n):
            service.register(
                session,
                name="Linked",
                email=f"link-{i}-{time.time_ns()}@example.com",
                password="bench-password-1",
            )
    worker = build_worker(services)
    started = time.perf_counter()
    ran = worker.run_until_idle()
    return ran / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="postgresql")
    parser.add_argument("-n", type=int, default=200, help="registrations per scenario")
    parser.add_argument("--jobs", type=int, default=5000, help="jobs for the queue benchmark")
    parser.add_argument(
        "--threads", default="1,2,4,8", help="worker thread counts for the queue benchmark"
    )
    parser.add_argument("--latency-samples", type=int, default=100)
    only = parser.add_mutually_exclusive_group()
    only.add_argument(
        "--registration-only", action="store_true", help="skip the job worker benchmarks"
    )
    only.add_argument("--jobs-only", action="store_true", help="skip registration")
    args = parser.parse_args()
    configure_logging(level=logging.WARNING)

    print(f"Billfold foundation benchmark on {args.db}; {os.getloadavg()[0]:.2f} load (1 min)")
    if not args.jobs_only:
        registration(args)
    if not args.registration_only:
        jobs(args)


def registration(args: argparse.Namespace) -> None:
    with LocalStripe.start() as stripe_standin, database(args.db) as url:
        migrations.upgrade(url)
        print("Registration, POST /users over HTTP (includes Argon2id hashing):")
        for mode in ("on_first_payment", "on_registration"):
            settings = settings_for(url, stripe_standin.url, stripe_customer_creation=mode)
            with served(settings) as base:
                registration_latency(base, 5, f"warm-{mode}")
                samples = registration_latency(base, args.n, mode)
            label = (
                "without Stripe (on_first_payment)"
                if mode == "on_first_payment"
                else "with inline Stripe customer (on_registration)"
            )
            report(label, samples)


def jobs(args: argparse.Namespace) -> None:
    # The job benchmarks get a database of their own: the registrations above left link
    # jobs behind, which a worker that knows only the no-op kind would bury.
    with LocalStripe.start() as stripe_standin, database(args.db) as url:
        migrations.upgrade(url)
        services = build_services(settings_for(url, stripe_standin.url))
        print("Job worker:")
        for workers in (int(t) for t in args.threads.split(",")):
            rate, cpu_ms = job_throughput(services, args.jobs, workers)
            print(
                f"  no-op jobs, {workers} worker thread(s):            {rate:8.0f} jobs/s"
                f"  ({cpu_ms:.3f} ms CPU per job)"
            )
        for wakeup in (False, True):
            label = "woken on enqueue" if wakeup else "polling every 0.5 s"
            report(
                f"enqueue to start, idle worker, {label}",
                job_latency(services, args.latency_samples, wakeup=wakeup),
            )
        rate = link_throughput(services, max(50, args.n // 2))
        print(f"  customer link jobs (find + create in Stripe):  {rate:8.0f} jobs/s")
        services.db.dispose()


if __name__ == "__main__":
    main()
