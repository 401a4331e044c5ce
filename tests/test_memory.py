"""keep_freed_memory: freed activation-sized buffers are reused instead of faulted in again."""

import subprocess
import sys
import textwrap

import pytest

from ldmdetect.memory import keep_freed_memory

PROBE = textwrap.dedent(
    """
    import resource, sys
    import torch
    from ldmdetect.memory import keep_freed_memory
    applied = keep_freed_memory() if sys.argv[1] == "keep" else False
    torch.manual_seed(0)
    torch.set_num_threads(1)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, 1),
    )
    x = torch.randn(32, 3, 64, 64)
    def step():  # a training step's activations and gradients: a few MiB each, freed each step
        net.zero_grad()
        net(x).sum().backward()
    for _ in range(3):
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        step()
    print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def _faults(mode: str, env: dict | None = None) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True, env=env
    ).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_kept_memory_is_not_faulted_in_again():
    applied, kept = _faults("keep")
    _, default = _faults("default")
    assert applied == "True"
    # glibc's defaults fault the step's buffers in again every step (about 90,000 pages over
    # 20 steps here); kept, they are reused (about 3,000).
    assert kept * 10 < default, (kept, default)


def test_switched_off_by_the_environment(monkeypatch):
    monkeypatch.setenv("LDMDETECT_KEEP_FREED_MEMORY", "0")
    assert keep_freed_memory() is False
