"""The README's Command line table, run: every command it lists, in its shortest and its fullest
form, against a real run directory and checkpoint, so the table cannot drift from the CLI again;
and the documented config groups and closed-pipe behaviour of the same commands."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import REPO, SAMPLE_TOPOLOGY

JOB = """
import numpy as np, sys
import hpcrt
from hpcrt import monitor
from hpcrt.checkpoint import Checkpointer
rt = hpcrt.init({"run_dir": sys.argv[1], "log_files": False})
monitor.start({"report_every": 2})
with Checkpointer(sys.argv[1] + "/checkpoints", levels=("memory", "global"), local_dir=sys.argv[2]) as ck:
    for step in (1, 2):
        with monitor.section("work"):
            ck.save(step, {"weights": np.full(4, step + rt.rank, dtype=np.float32), "step": step})
        monitor.step(step)
    ck.wait()
monitor.stop()
hpcrt.finalize()
"""

EXPECTED = {
    # the command's words before its first argument -> (text form's key line, check of the JSON form)
    "hpcrt info": ("thread level     : MPI_THREAD_", lambda out: len(json.loads(out)["ranks"]) >= 1),
    "hpcrt diagnose": ("every rank finished: all 2 ranks stopped their monitor normally",
                       lambda out: json.loads(out)["size"] == 2),
    "hpcrt ckpt list": ("         2      2  global", lambda out: [r["step"] for r in json.loads(out)] == [1, 2]),
    "hpcrt ckpt verify": (" 0 bad or missing", lambda out: {c["status"] for c in json.loads(out)} == {"ok"}),
    "hpcrt ckpt inspect": ("step 2: 2 ranks", lambda out: json.loads(out)["step"] == 2),
    "hpcrt ckpt gc": (" leftover(s) ", None),
}
"""A command the table gains must be added here, with what its output must hold."""


def readme_commands() -> list:
    """The commands of the README's Command line table, ``a|b`` alternatives spelled out."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Command line\n", 1)[1].split("\n## ", 1)[0]
    commands = []
    for cell in re.findall(r"^\| `(hpcrt [^`]+)` \|", section, flags=re.M):
        words = cell.replace("\\|", "|").split()
        at = next((i for i, w in enumerate(words) if "|" in w and not w.startswith("[")), None)
        if at is None:
            commands.append(words)
        else:
            commands.extend(words[:at] + [choice] + words[at + 1:] for choice in words[at].split("|"))
    return commands


def name(words: list) -> str:
    """A command's words before its arguments: ``hpcrt ckpt verify``."""
    return " ".join(w for w in words if w.isalpha() and w.islower())


def forms(words: list, values: dict) -> tuple:
    """The command without its ``[optional]`` parts and with all of them, placeholders filled."""
    shortest, fullest, optional = [], [], False
    for word in words:
        opens, closes = word.startswith("["), word.endswith("]")
        word = values.get(word.strip("[]"), word.strip("[]"))
        if not (optional or opens):
            shortest.append(word)
        fullest.append(word)
        optional = (optional or opens) and not closes
    return shortest, fullest


def make_run(launch, tmp_path: Path) -> Path:
    """A clean 2-rank run with the monitor and two checkpointed steps; its run directory."""
    script = tmp_path / "job.py"
    script.write_text(JOB)
    run = tmp_path / "run"
    result = launch([str(script), str(run), str(tmp_path / "local")], ranks=2, timeout=120)
    assert result.returncode == 0, result.stderr
    return run


def test_every_command_of_the_readme_table_runs(launch, tmp_path):
    run = make_run(launch, tmp_path)
    values = {"FILE": str(SAMPLE_TOPOLOGY), "RUN_DIR": str(run), "DIR": str(run / "checkpoints"), "S": "2"}
    commands = readme_commands()
    listed = {name(words) for words in commands}
    assert listed == set(EXPECTED), f"the table lists {sorted(listed)}; this test knows {sorted(EXPECTED)}"
    for words in commands:
        key_line, json_holds = EXPECTED[name(words)]
        for argv in forms(words, values):
            # the sample topology has 4 ranks: a job of that size, as the table says to run it
            ranks = 4 if str(SAMPLE_TOPOLOGY) in argv else None
            result = launch(["-m", "hpcrt", *argv[1:]], ranks=ranks, timeout=120)
            assert result.returncode == 0, (argv, result.stderr)
            if "--json" in argv:
                assert json_holds(result.stdout), (argv, result.stdout)
            else:
                assert key_line in result.stdout, (argv, result.stdout)


def test_every_cli_command_is_in_the_readme_table():
    from hpcrt.cli import build_parser
    parser = build_parser()

    def leaves(p, prefix):
        subs = [a for a in p._actions if a.__class__.__name__ == "_SubParsersAction"]
        if not subs:
            return {prefix}
        return {leaf for name, sub in subs[0].choices.items() for leaf in leaves(sub, f"{prefix} {name}")}

    assert leaves(parser, "hpcrt") == {name(words) for words in readme_commands()}


def test_a_closed_pipe_ends_ckpt_verify_quietly(launch, tmp_path):
    run = make_run(launch, tmp_path)
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first write, as `| head -1` is after its line
    try:
        result = subprocess.run([sys.executable, "-m", "hpcrt", "ckpt", "verify", str(run / "checkpoints"), "--json"],
                                stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write_end)
    assert result.returncode == 141 and result.stderr == "", result.stderr


def test_runtime_and_monitor_are_config_groups_of_every_hydra_job(launch, tmp_path):
    # docs/MONITOR.md: MonitorConfig is a Hydra config group; train.yaml names `monitor: default`
    script = tmp_path / "app.py"
    script.write_text("from hpcrt.jobs.hydra_mpi import mpi_hydra_main\n"
                      "mpi_hydra_main('groups', 'train', lambda cfg: print('report_every', cfg.monitor.report_every,"
                      " 'log_level', cfg.runtime.log_level))\n")
    result = launch([str(script), "monitor.report_every=7"], timeout=120)
    assert result.returncode == 0, result.stderr
    assert "report_every 7 log_level INFO" in result.stdout, result.stdout
