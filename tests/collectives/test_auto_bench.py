"""``python -m hpcrt.collectives.bench auto``: auto beside each algorithm, per size."""

from __future__ import annotations

from hpcrt.collectives.costmodel.auto_bench import Family, Result, table


def _family() -> Family:
    return Family("allreduce", ("mpi", "ring"), lambda x, algorithm, validate: x)


def test_the_table_judges_auto_against_the_fastest_other_row_and_mpi_at_small_sizes():
    results = [Result(8, {"mpi": 2e-6, "ring": 8e-6, "auto": 2.1e-6}, "mpi"),
               Result(1 << 20, {"mpi": 9e-4, "ring": 5e-4, "auto": 7e-4}, "mpi"),
               Result(1 << 22, {"mpi": 4e-3, "ring": 2e-3, "auto": 2.2e-3}, "pipeline/1")]
    lines = table(_family(), results)
    rows = [line.split("|")[1:-1] for line in lines if line.startswith("| ") and line[2].isdigit()]
    assert [[cell.strip() for cell in row] for row in rows] == [
        ["8", "2.0", "8.0", "2.1", "mpi", "mpi", "1.05", "1.05", "1.05"],
        ["1048576", "900.0", "500.0", "700.0", "mpi", "ring", "1.40", "0.78", "0.78"],
        ["4194304", "4000.0", "2000.0", "2200.0", "pipeline/1", "ring", "1.10", "0.55", "1.10"]]
    assert "# allreduce auto within 10% of the fastest at 2 of 3 sizes; worst 1.40x at 1048576 B" in lines
    assert "# allreduce auto / mpi at <= 65536 B: worst 1.05x at 8 B" in lines
    assert "# allreduce noise: auto against the row running the same code, 0.78x to 1.10x over 3 sizes" in lines


def test_the_subcommand_launches_its_ranks_and_names_what_auto_ran(launch):
    """Run alone, it starts 2 ranks itself; before calibration auto runs MPI's own call at a few bytes."""
    result = launch(["-m", "hpcrt.collectives.bench", "auto", "--max-bytes", "64", "--factor", "8", "--blocks", "1",
                     "--no-calibrate"], timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line.split("|") for line in result.stdout.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [row[1].strip() for row in rows] == ["8", "64"] * 2  # all_scan, then allreduce
    assert all(row[-6].strip() == "mpi" and float(row[-3]) > 0 for row in rows)  # auto ran, auto / fastest


def test_bad_sizes_are_one_line_and_exit_2(launch):
    result = launch(["-m", "hpcrt.collectives.bench", "auto", "--factor", "1"], timeout=60)
    assert result.returncode == 2
    assert result.stderr.count("--factor >= 2") == 1 and "Traceback" not in result.stderr
