"""The seeded fault simulation (see simulator.py): a fixed set of seeds in CI; more locally.

BILLFOLD_SIM_SEEDS=50 pytest tests/simulation        # 50 random seeds (printed)
BILLFOLD_SIM_SEED=123456 pytest tests/simulation     # one seed again, e.g. a failure's
BILLFOLD_SIM_STEPS=120 …                              # longer runs (40 steps by default)
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import stripe
from fastapi.testclient import TestClient
from simulator import Simulation
from support.netfault import FaultyLink

from billfold.app import create_app
from billfold.config import Settings
from billfold.jobs.worker import Worker
from billfold.services import Services

CI_SEEDS = [1, 2, 3]


def _seeds() -> list[int]:
    if os.environ.get("BILLFOLD_SIM_SEED"):
        return [int(os.environ["BILLFOLD_SIM_SEED"])]
    if os.environ.get("BILLFOLD_SIM_SEEDS"):
        return [random.randrange(1, 10**9) for _ in range(int(os.environ["BILLFOLD_SIM_SEEDS"]))]
    return CI_SEEDS


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    # Short leases, so jobs a killed worker held come back within the run.
    return {
        "job_lease_seconds": 3.0,
        "customer_link_lease_seconds": 3.0,
        "stripe_timeout_seconds": 2.0,
        # …and the janitor looks at what the run left open soon after the faults stop.
        "payment_janitor_lease_seconds": 2.5,
    }


@pytest.fixture
def sim_client(services: Services) -> Iterator[TestClient]:
    """The app answering 500 as a status (a broken invariant), not as a raised error."""
    with TestClient(create_app(services=services), raise_server_exceptions=False) as client:
        yield client


@pytest.mark.parametrize("seed", _seeds())
def test_random_interleavings_with_faults_keep_every_invariant(
    seed: int,
    services: Services,
    settings: Settings,
    sim_client: TestClient,
    worker: Worker[Services],
    stripe_link: FaultyLink,
    stripe_api: stripe.StripeClient,
    admin: dict[str, str],
    tmp_path: Path,
) -> None:
    steps = int(os.environ.get("BILLFOLD_SIM_STEPS", "40"))
    print(f"simulation seed={seed} steps={steps}")
    Simulation(
        seed=seed,
        services=services,
        settings=settings,
        client=sim_client,
        worker=worker,
        link=stripe_link,
        stripe_api=stripe_api,
        admin=admin,
        workdir=tmp_path,
        steps=steps,
    ).run()
