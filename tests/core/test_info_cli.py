"""``hpcrt info`` as a single process and under mpiexec, with and without a topology file."""

import json
import os
import socket
import subprocess
import sys
import textwrap

from mpi4py import MPI

from conftest import SAMPLE_TOPOLOGY


def test_single_process_table(launch):
    result = launch(["-m", "hpcrt", "info"])
    assert result.returncode == 0, result.stderr
    out = result.stdout
    library = MPI.Get_library_version().splitlines()[0].strip()
    assert library in out and "thread level     : MPI_THREAD_" in out
    assert "CUDA-aware MPI   : no" in out and "staged" in out
    assert "  probed         : no\n  confirmed      : not tested\n" in out  # the wheel's MPICH answers 0
    assert f"1 on 1 node(s): {socket.gethostname()}" in out
    assert "rank  node" in out


PROBE_SAYS_YES_RANK_0_SENDS_WRONG_NUMBERS = textwrap.dedent("""
    import sys
    from mpi4py import MPI
    from hpcrt.backends import cuda_aware
    from hpcrt.cli import main
    cuda_aware.probe_cuda_support = lambda library=None: (True, "a test probe saying 1")
    if MPI.COMM_WORLD.rank == 0:
        right = cuda_aware.payload
        cuda_aware.payload = lambda rank, count: right(rank, count) * (2 if rank == 0 else 1)
    sys.exit(main(sys.argv[1:]))
""")


def test_info_shows_what_was_probed_and_what_was_confirmed(launch, tmp_path):
    (tmp_path / "info.py").write_text(PROBE_SAYS_YES_RANK_0_SENDS_WRONG_NUMBERS)
    result = launch([str(tmp_path / "info.py"), "info"], ranks=2, timeout=120)
    assert result.returncode == 0, result.stderr
    assert ("CUDA-aware MPI   : no — probe: a test probe saying 1, but the device-buffer exchange failed on rank(s) 1 "
            "(rank 1: 8 of 8 values received from rank 0 were wrong); GPU buffers are staged through pinned host "
            "memory\n  probed         : yes\n  confirmed      : no\n") in result.stdout
    as_json = json.loads(launch([str(tmp_path / "info.py"), "info", "--json"], ranks=2, timeout=120).stdout)
    cuda = (as_json["cuda_aware"], as_json["cuda_aware_probed"], as_json["cuda_aware_confirmed"])
    assert cuda == (False, True, False)


def test_four_ranks_on_the_real_machine(launch):
    result = launch(["-m", "hpcrt", "info", "--json"], ranks=4)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)  # printed once, by rank 0
    assert [r["rank"] for r in info["ranks"]] == [0, 1, 2, 3]
    assert info["nodes"] == [socket.gethostname()]
    assert [r["local_rank"] for r in info["ranks"]] == [0, 1, 2, 3]
    assert info["topology_source"] == "discovered"


def test_four_ranks_with_the_sample_topology(launch):
    result = launch(["-m", "hpcrt", "info", "--topology", str(SAMPLE_TOPOLOGY)], ranks=4)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "4 on 2 node(s): node-ib, node-roce" in out
    rows = [line.split() for line in out.splitlines() if line[:1].isdigit()]
    assert [(r[0], r[1], r[2]) for r in rows] == [("0", "node-ib", "0"), ("1", "node-ib", "1"),
                                                  ("2", "node-roce", "0"), ("3", "node-roce", "1")]
    assert "ib0 ib 200 Gb/s" in out and "eth1 roce 100 Gb/s" in out


def test_bad_topology_file_fails_every_rank_clearly(launch, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("nodes: [{name: a, ranks: 2, nic: {class: ib}}]\n"
                   "links: {intra: {alpha_us: 1, bandwidth_gbytes_s: 1}, ib: {alpha_us: 1, bandwidth_gbytes_s: 1}}\n")
    result = launch(["-m", "hpcrt", "info", "--topology", str(bad)], ranks=3, timeout=60)
    assert result.returncode != 0
    assert f"topology file {bad}: key 'nodes': expected the nodes' ranks to cover exactly ranks 0..2" \
        in result.stderr


def test_a_closed_pipe_ends_info_quietly(tmp_path):
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first write, as `| head -1` is after its line
    try:
        result = subprocess.run([sys.executable, "-m", "hpcrt", "info", "--json"], stdout=write_end,
                                stderr=subprocess.PIPE, text=True, timeout=60, cwd=tmp_path)
    finally:
        os.close(write_end)
    assert result.returncode == 141 and result.stderr == "", result.stderr
