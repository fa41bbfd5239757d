"""Whether GPU buffers go to MPI directly: explicit setting > probe hint, confirmed > host staging.

``MPIX_Query_cuda_support`` is wrong in both directions on some builds, so a probe's yes holds only
once every rank's probe said yes and a device-buffer exchange, checked numerically, passed on every
rank: first each rank alone in a child process (a library that reads device memory as host memory
kills the child, not the job), then between the ranks with a bounded wait. Run as
``python -m hpcrt.backends.cuda_aware DEVICE`` it is that child (DEVICE: a GPU index or ``cpu``).
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Optional

import numpy as np

from hpcrt.core.tags import CUDA_AWARE_CHECK

EXCHANGE_SIZES = (8, 1 << 17)
"""Float64 values per exchange: an eager message and a 1 MiB one (rendezvous, GPU IPC paths)."""
EXCHANGE_TIMEOUT_S = 20.0
"""Bound on each exchange between the ranks; a transport that never delivers fails the check."""
CHILD_TIMEOUT_S = 60.0
"""Bound on the child process's check (its interpreter, MPI and CUDA start-up included)."""
CANCEL_TIMEOUT_S = 1.0
"""Bound on the wait for a timed-out exchange's cancelled receive to complete before its request is freed."""
_ABANDONED: list = []
"""Buffers and requests of exchanges that timed out: MPI may still write the buffers, so they are never freed;
the requests are cancelled or freed and the communicator freed, so that MPI_Finalize does not wait on them."""
_LAUNCHER_VARIABLES = re.compile(r"^(PMI_|PMIX_|PRTE_|HYDRA_|HYDI_|MPI_LOCAL|OMPI_(?!MCA_)|OMPI_MCA_(ess|pmix|orte))")
"""What tells MPI it runs under a launcher: the child must start a singleton, not join the job."""


@dataclass(frozen=True)
class CudaAwareDecision:
    """The decision and why, as ``hpcrt info`` prints it."""

    enabled: bool
    reason: str
    probed: Optional[bool] = None
    """``MPIX_Query_cuda_support``'s answer (None: not asked, or the library has no such function)."""
    confirmed: Optional[bool] = None
    """Whether the device-buffer exchange passed on every rank (None: not run)."""


def loaded_mpi_library() -> Optional[str]:
    """Path of the MPI shared library this process has loaded (read from /proc/self/maps)."""
    try:
        maps = open("/proc/self/maps").read()
    except OSError:
        return None
    paths = sorted(set(re.findall(r"(/\S*/lib(?:mpi|mpich|mpi_mpifh)\S*\.so[\d.]*)", maps)))
    return paths[0] if paths else None


def probe_cuda_support(library: Optional[str] = None) -> tuple[Optional[bool], str]:
    """Ask the MPI library ``MPIX_Query_cuda_support()`` through ctypes.

    Returns (answer, how it was obtained); the answer is None when the library has no such symbol.
    It is a hint only: some libraries answer at compile time, not for the running transport.
    """
    library = library or loaded_mpi_library()
    if library is None:
        return None, "no MPI shared library found in this process"
    try:
        lib = ctypes.CDLL(library)
        query = lib.MPIX_Query_cuda_support
    except (OSError, AttributeError):
        return None, f"{library} has no MPIX_Query_cuda_support"
    query.restype = ctypes.c_int
    answer = bool(query())
    return answer, f"MPIX_Query_cuda_support() of {library} returned {int(answer)}"


def decide_cuda_aware(setting: str, env_setting: Optional[str] = None,
                      probe: Optional[tuple[Optional[bool], str]] = None) -> CudaAwareDecision:
    """Decide from ``setting`` (yes/no/auto, environment already merged) and the probe's hint.

    ``env_setting`` names where an explicit setting came from, for the reason text.
    """
    source = env_setting or "config"
    if setting == "yes":
        return CudaAwareDecision(True, f"set to yes by {source}")
    if setting == "no":
        return CudaAwareDecision(False, f"set to no by {source}; GPU buffers are staged through pinned host memory")
    answer, how = probe if probe is not None else probe_cuda_support()
    if answer:
        return CudaAwareDecision(True, f"probe: {how}", probed=True)
    return CudaAwareDecision(False, f"probe: {how}; {STAGED}", probed=answer)


STAGED = "GPU buffers are staged through pinned host memory"


def confirm_cuda_aware(comm: Any, decision: CudaAwareDecision, device: Optional[int]) -> CudaAwareDecision:
    """Collective over ``comm``: keep a probe's yes only if every rank's probe said yes and the device-buffer
    exchange passed on every rank, else stage on every rank; the reason names the ranks that failed.

    ``device`` is the rank's GPU index, or None on a CPU rank (whose device buffers are fake GPU arrays).
    """
    wants = comm.allgather(decision.enabled and decision.probed is True)
    if not decision.enabled or decision.probed is not True:
        return decision
    if not all(wants):
        return _staged(decision, None, f"the probe did not say yes on rank(s) {_ranks(wants, False)}")
    for check in (lambda: isolated_self_exchange(device), lambda: ring_exchange(comm, device)):
        failures = comm.allgather(_failure_of(check))
        if any(failures):
            first = next(r for r, text in enumerate(failures) if text)
            return _staged(decision, False, f"the device-buffer exchange failed on rank(s) "
                                            f"{_ranks(failures, True)} (rank {first}: {failures[first]})")
    return replace(decision, reason=f"{decision.reason}; confirmed by a device-buffer exchange on every rank, "
                                    f"checked value by value", confirmed=True)


def _failure_of(check: Callable[[], Optional[str]]) -> Optional[str]:
    """``check()``'s failure, an exception included: every rank must reach the allgather that follows it."""
    try:
        return check()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


def _staged(decision: CudaAwareDecision, confirmed: Optional[bool], why: str) -> CudaAwareDecision:
    return replace(decision, enabled=False, confirmed=confirmed, reason=f"{decision.reason}, but {why}; {STAGED}")


def _ranks(values: list, which: bool) -> str:
    return ", ".join(str(rank) for rank, value in enumerate(values) if bool(value) == which)


def payload(rank: int, count: int) -> np.ndarray:
    """What ``rank`` sends: values no stale or zeroed buffer holds by chance."""
    return np.arange(count, dtype=np.float64) * 3.0 + rank * 1e6 + 0.5


def _device_array(values: np.ndarray, device: Optional[int]) -> Any:
    """``values`` on the GPU ``device`` (synchronized, ready for MPI), or on the fake GPU for None."""
    if device is None:
        from hpcrt.backends.fakegpu import to_fake_gpu
        return to_fake_gpu(values)
    import cupy
    with cupy.cuda.Device(device):
        array = cupy.asarray(values)
        cupy.cuda.Device(device).synchronize()
    return array


def ring_exchange(comm: Any, device: Optional[int], timeout_s: Optional[float] = None) -> Optional[str]:
    """Send device buffers to the next rank and receive from the previous one, within ``timeout_s`` each;
    None when every value arrived right, else what went wrong first. Every size is exchanged even after
    wrong values, so that no other rank waits for this one; the caller agrees on the outcome."""
    timeout_s = EXCHANGE_TIMEOUT_S if timeout_s is None else timeout_s
    private = comm.Dup()
    left, right = (comm.rank - 1) % comm.size, (comm.rank + 1) % comm.size
    wrong = []
    for count in EXCHANGE_SIZES:
        try:
            send = _device_array(payload(comm.rank, count), device)
            received = _device_array(np.zeros(count), device)
            requests = [private.Irecv(received, source=left, tag=CUDA_AWARE_CHECK),
                        private.Isend(send, dest=right, tag=CUDA_AWARE_CHECK)]
        except Exception as exc:  # an MPI that refuses device buffers may say so
            private.Free()
            return f"MPI refused a device buffer: {exc}"
        if not _completed(requests, timeout_s):
            _abandon(private, send, received, requests)
            return f"{count} values to rank {right} and from rank {left} not delivered within {timeout_s:g} s"
        errors = int(np.count_nonzero(received.get() != payload(left, count)))
        wrong += [f"{errors} of {count} values received from rank {left} were wrong"] if errors else []
    private.Free()
    return wrong[0] if wrong else None


def _abandon(private: Any, send: Any, received: Any, requests: list) -> None:
    """Give up a timed-out exchange: cancel its pending receive (a send cannot be cancelled portably), free
    each request still active and the communicator, and keep the buffers, which MPI may still use."""
    if requests[0]:
        requests[0].Cancel()  # the receive: a no-op on one that completed meanwhile
    if not _completed(requests, CANCEL_TIMEOUT_S):
        for request in requests:
            if request:  # still active (a send nobody received, a receive matched but never finished)
                request.Free()
    private.Free()
    _ABANDONED.append((private, send, received, requests))


def _completed(requests: list, timeout_s: float) -> bool:
    """Whether all ``requests`` completed within ``timeout_s`` (polled: MPI has no wait with a timeout)."""
    from mpi4py import MPI
    deadline = time.monotonic() + timeout_s
    while not MPI.Request.Testall(requests):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def self_exchange_command(device: Optional[int]) -> list[str]:
    """The child's command line (runpy's warning that hpcrt imported this module already is silenced)."""
    return [sys.executable, "-W", "ignore::RuntimeWarning:runpy", "-m", "hpcrt.backends.cuda_aware",
            "cpu" if device is None else str(device)]


def isolated_self_exchange(device: Optional[int]) -> Optional[str]:
    """The exchange of a singleton MPI process with itself, in a child process: None when it passed."""
    return run_check(self_exchange_command(device), CHILD_TIMEOUT_S)


def run_check(command: list[str], timeout_s: float) -> Optional[str]:
    """Run ``command`` outside the job (launcher variables removed): None on exit status 0, else why not
    (a crash by signal, a timeout, or its last line of output)."""
    env = {key: value for key, value in os.environ.items() if not _LAUNCHER_VARIABLES.match(key)}
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return f"the check in a child process did not finish within {timeout_s:g} s"
    if done.returncode == 0:
        return None
    last = (done.stdout + done.stderr).strip().splitlines()[-1:] or ["no output"]
    if done.returncode < 0:
        return f"the check in a child process was killed by {_signal_name(-done.returncode)} ({last[0]})"
    return f"the check in a child process failed with exit status {done.returncode}: {last[0]}"


def _signal_name(number: int) -> str:
    """``SIGSEGV`` for 11; ``signal 35`` for a number with no name (a real-time signal)."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _self_exchange_main(argv: list[str]) -> int:
    """The child: a singleton MPI process exchanging device buffers with itself."""
    from mpi4py import MPI
    failure = ring_exchange(MPI.COMM_SELF, None if argv[0] == "cpu" else int(argv[0]))
    print(failure or "device-buffer self-exchange passed", flush=True)
    return 1 if failure else 0


if __name__ == "__main__":
    sys.exit(_self_exchange_main(sys.argv[1:]))
