"""Test-wide settings: no network, one intra-op thread (tiny models run faster without thread hand-offs), and the
device the tests run on: `SMILE_HF_TEST_DEVICE` (unset: the CPU; `cuda` or `cuda:0`: the first GPU), given to the
tests as the `torch_device` fixture (and as `testing_utils.TEST_DEVICE` where no fixture reaches)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


def pytest_configure(config):
    """Resolve `SMILE_HF_TEST_DEVICE` before anything is collected: a value naming no device of this machine stops the
    session with one usage error (rather than tests failing or skipping one by one). On an accelerator, float32
    stays float32 (no TF32) and cuDNN picks deterministic kernels: the tests compare float32 results at 1e-5 and
    resumed runs bit for bit."""
    try:
        from tests.testing_utils import TEST_DEVICE
    except ValueError as error:
        raise pytest.UsageError(str(error)) from None
    if TEST_DEVICE.startswith("cuda"):
        exact_float32_and_deterministic_cudnn()


def exact_float32_and_deterministic_cudnn() -> None:
    """No TF32 in matmuls and convolutions (cuDNN's convolutions default to it), set the way `TrainingArguments(
    tf32=False)` sets it (mixing torch's new and legacy TF32 flags makes reading the legacy ones raise); cuDNN's
    deterministic kernels, chosen without benchmarking."""
    torch.backends.fp32_precision = "ieee"
    # Each backend's own flag too: torch 2.11 keeps cuDNN's convolutions at "tf32" after the global one is set.
    torch.backends.cuda.matmul.fp32_precision = "ieee"
    torch.backends.cudnn.fp32_precision = "ieee"
    torch.backends.cudnn.conv.fp32_precision = "ieee"
    torch.backends.cudnn.rnn.fp32_precision = "ieee"
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def pytest_report_header(config):
    from tests.testing_utils import DEVICE_VARIABLE, TEST_DEVICE, available_accelerator

    kind, count = available_accelerator()
    here = f"{count} {kind} device(s)" if kind else "no accelerator"
    header = f"smile_hf test device: {TEST_DEVICE} ({DEVICE_VARIABLE}={os.environ.get(DEVICE_VARIABLE, '')!r}; {here})"
    if TEST_DEVICE != "cpu" and count > 1:
        header += "; several visible devices: single-process Trainers use nn.DataParallel over them (see docs/lora.md)"
    return header


@pytest.fixture(autouse=True)
def _share_the_cores_between_test_processes(monkeypatch):
    """On an accelerator the run script gives each run one DataLoader worker per core (less one): with pytest-xdist's
    N processes that is N times the machine's cores in workers. Each test process counts its share of the cores."""
    processes = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if processes > 1:
        from smile_hf.run import arguments

        share = max(2, arguments.available_cpu_count() // processes)
        monkeypatch.setattr(arguments, "available_cpu_count", lambda: share)


@pytest.fixture(scope="session")
def torch_device() -> str:
    """The device the test's models and tensors go on: "cpu", or e.g. "cuda:0" (`SMILE_HF_TEST_DEVICE`)."""
    from tests.testing_utils import TEST_DEVICE

    return TEST_DEVICE


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
