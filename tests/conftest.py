"""Shared fixtures and test-wide settings.

Tests never reach the network: the hub is forced offline before any HF library is imported,
so a hub id fails at once instead of retrying for ~20 s per file. Torch runs one thread: the
tiny test models gain nothing from more, and on a shared, busy CPU its thread pool made them
40x slower (a 64 px tiny VAE round trip took 1.5 s with 2 threads, 40 ms with 1).
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Stable Diffusion pipeline directory (seed 0), written once per test session.

    Treat it as read-only: tests in every folder share it.
    """
    from ldmdetect.generative.tiny import write_tiny_pipeline

    return write_tiny_pipeline(tmp_path_factory.mktemp("tiny-sd"), seed=0)
