"""Shared test fixtures: small threads, the reference cases from ../shared/fixtures."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

# Beside the repository in shared/; PCDARTS_REFERENCE_CASES names another copy.
REFERENCE_CASES = Path(
    os.environ.get(
        "PCDARTS_REFERENCE_CASES",
        Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "pcdarts_reference_cases.pt",
    )
)

# Tiny tensors gain nothing from threads, and OpenMP spin-waits make 2 threads on a
# shared 2-core machine up to 100x slower: tests run single-threaded.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def reference() -> dict[str, Any]:
    """Inputs and outputs recorded from the reference PC-DARTS code (shared/fixtures)."""
    if not REFERENCE_CASES.exists():
        pytest.skip(
            f"reference cases not found at {REFERENCE_CASES} (they live beside the repo in "
            "shared/; set PCDARTS_REFERENCE_CASES to another copy)"
        )
    return torch.load(REFERENCE_CASES)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
