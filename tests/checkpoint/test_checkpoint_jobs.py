"""The checkpointer with real processes: a rank SIGKILLed in every phase of a save, restarts on
other rank counts, readers that are not hpcrt (plain h5py, h5dump), and ``hpcrt ckpt``."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from conftest import SAMPLE_TOPOLOGY, require_tool

JOB = str(Path(__file__).parent / "cases" / "ckpt_job.py")
TOPOLOGY = {"CKPT_TOPOLOGY": str(SAMPLE_TOPOLOGY)}
sys.path.insert(0, str(Path(JOB).parent))
from ckpt_job import PHASES, full  # noqa: E402


def results(finished):
    assert finished.returncode == 0, finished.stdout + finished.stderr
    return json.loads(re.search(r"^RESULTS (.*)$", finished.stdout, re.M).group(1))


def test_sigkill_in_every_phase_restores_a_committed_step(launch, tmp_path):
    """24 jobs, each losing one rank to SIGKILL in a chosen phase (2 seeds per phase, plus
    random-time kills); a fresh job then restores each directory."""
    killed, dirs = {}, []
    for seed in range(2 * len(PHASES)):
        directory, local = tmp_path / f"ckpt{seed}", tmp_path / f"local{seed}"
        job = launch([JOB, "kill", str(directory), str(local), str(seed)], ranks=4, timeout=60, env=TOPOLOGY)
        if match := re.search(r"KILL seed=\d+ rank=(\d) phase=(\S+)", job.stdout):
            assert job.returncode != 0
            killed[seed] = match.group(2)
        else:
            assert job.returncode == 0, job.stdout + job.stderr
        dirs += [str(directory), str(local)]
    assert len(killed) >= 20 and set(killed.values()) == set(PHASES), killed
    for row in results(launch([JOB, "check", *dirs], ranks=4, timeout=120, env=TOPOLOGY)):
        assert row["ok"], row  # bit for bit what was saved at that step
        if row["committed"]:  # the newest committed step, never an older one, never a torn one
            assert row["step"] == max(row["committed"]) and not row["tmp_left"], row


def test_restart_on_other_rank_counts(launch, tmp_path):
    """4 → 2 and 4 → 3 ranks on one (real) node, where only the global level is reachable, and
    2 → 3: every rank gets the rows of numpy's even split, the shards of all ranks tile each
    global array once, and plain values are those of saved rank ``rank % 4`` (or ``% 2``)."""
    for saved, restored in ((4, (2, 3)), (2, (3,))):
        directory, local = tmp_path / f"from{saved}", tmp_path / f"local{saved}"
        env = TOPOLOGY if saved == 4 else {}
        assert launch([JOB, "save", str(directory), str(local), "3"], ranks=saved, timeout=60,
                      env=env).returncode == 0
        for ranks in restored:
            (row,) = results(launch([JOB, "check", str(directory), str(local)], ranks=ranks, timeout=60,
                                    env={"CKPT_SAVED_SIZE": str(saved)}))
            assert row["ok"] and row["step"] == 3, row


def test_plain_h5py_and_h5dump_read_the_global_arrays(launch, tmp_path):
    directory = tmp_path / "ckpt"
    assert launch([JOB, "save", str(directory), str(tmp_path / "local"), "2"], ranks=4, timeout=60,
                  env=TOPOLOGY).returncode == 0
    step_dir = directory / "step-000000002"
    reader = ("import sys, json, h5py, numpy as np\n"
              "f = h5py.File(sys.argv[1] + '/global.h5', 'r')\n"
              "assert 'hpcrt' not in sys.modules\n"
              "r = h5py.File(sys.argv[1] + '/rank-00002.h5', 'r')\n"
              "pack = r['_hpcrt_packed']  # small plain arrays: [key, dtype, shape, byte offset] in its index\n"
              "key, dtype, shape, at = next(row for row in json.loads(pack.attrs['hpcrt_index']) if row[0] == 'mine')\n"
              "mine = pack[at:at + np.dtype(dtype).itemsize * int(np.prod(shape))].view(dtype).reshape(shape)\n"
              "print(json.dumps({'w': f['model/w'][...].tolist(), 'v': f['v'][...].tolist(),\n"
              "  'attrs': {k: str(v) for k, v in f.attrs.items()}, 'virtual': f['v'].is_virtual,\n"
              "  'json': json.loads(r.attrs['hpcrt_json']), 'offset': r['v'].attrs['offset'].tolist(),\n"
              "  'mine': mine.tolist(), 'rank_version': str(r.attrs['format_version'])}))\n")
    out = json.loads(subprocess.run([sys.executable, "-c", reader, str(step_dir)], cwd=tmp_path, check=True,
                                    capture_output=True, text=True, timeout=60).stdout)
    arrays = full(2)
    assert np.array_equal(np.array(out["w"]), arrays["w"]) and np.array_equal(out["v"], arrays["v"])
    assert out["virtual"] and out["json"]["meta/step"] == 2 and out["json"]["meta/rank"] == 2
    assert out["mine"] == [202] * 3 and out["rank_version"] == "2"
    assert {k: out["attrs"][k] for k in ("step", "world_size", "format_version")} == \
        {"step": "2", "world_size": "4", "format_version": "1"}
    assert "hpcrt_version" in out["attrs"]
    require_tool("h5dump", "apt-get install hdf5-tools (plain h5py read the arrays)")
    dumped = subprocess.run(["h5dump", "-d", "/v", str(step_dir / "global.h5")], cwd="/", check=True,
                            capture_output=True, text=True, timeout=60).stdout
    numbers = [int(n) for n in re.sub(r"\(\d+\):", " ", dumped.split("DATA {")[1].split("}")[0]).replace(
        ",", " ").split()]
    assert numbers == arrays["v"].tolist()
    attrs = subprocess.run(["h5dump", "-A", str(step_dir / "rank-00000.h5")], check=True, capture_output=True,
                           text=True, timeout=60).stdout
    assert 'ATTRIBUTE "step"' in attrs and 'ATTRIBUTE "hpcrt_json"' in attrs


def hpcrt_cli(*args):
    return subprocess.run([sys.executable, "-m", "hpcrt", "ckpt", *map(str, args)], capture_output=True, text=True,
                          timeout=60)


def test_cli_list_verify_inspect_and_errors(launch, tmp_path):
    directory, local = tmp_path / "ckpt", tmp_path / "local"
    assert launch([JOB, "save", str(directory), str(local), "3"], ranks=4, timeout=60,
                  env=TOPOLOGY).returncode == 0
    listed = hpcrt_cli("list", directory)
    assert listed.returncode == 0 and re.search(r"^\s+3\s+4\s+local,partner,global$", listed.stdout, re.M)
    assert json.loads(hpcrt_cli("list", directory, "--json").stdout)[-1] == \
        {"step": 3, "levels": ["local", "partner", "global"], "world_size": 4}
    good = hpcrt_cli("verify", directory, "--local-dir", local)
    assert good.returncode == 0 and "0 bad or missing" in good.stdout, good.stdout
    inspect = hpcrt_cli("inspect", directory, "--step", "3", "--local-dir", local)
    assert inspect.returncode == 0
    assert re.search(r"model/w\s+float64\s+sharded\s+\(13, 5\)\s+520", inspect.stdout), inspect.stdout
    assert re.search(r"level partner\s+4 files", inspect.stdout)
    victim = next(local.rglob("local/step-000000003/rank-00001.h5"))
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    bad = hpcrt_cli("verify", directory, "--step", "3", "--local-dir", local)
    assert bad.returncode == 1
    detail = re.search(r"xxh3-128 \w+, manifest says \w+", bad.stdout).group(0)
    assert re.findall(r"^BAD: .*$", bad.stdout, re.M) == [f"BAD: step 3 level local rank 1: {victim}: {detail}"]
    shutil.rmtree(next(local.glob("*/node-roce")))
    missing = hpcrt_cli("verify", directory, "--step", "3", "--local-dir", local)
    assert missing.returncode == 1 and len(re.findall(r"^MISSING: ", missing.stdout, re.M)) == 4
    # not a checkpoint directory; a manifest of a newer format
    plain = tmp_path / "plain"
    plain.mkdir()
    for action in ("list", "verify"):
        out = hpcrt_cli(action, plain)
        assert out.returncode == 2 and "is not an hpcrt checkpoint directory" in out.stderr
    manifest = directory / "step-000000003" / "manifest-global.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "format_version": 7}))
    out = hpcrt_cli("inspect", directory, "--step", "3")
    assert out.returncode == 2 and "format version 7" in out.stderr and "upgrade hpcrt" in out.stderr
    assert hpcrt_cli("inspect", directory, "--step", "9").returncode == 2


def test_benchmark_entry_point_runs(launch, tmp_path):
    """A smoke run of ``python -m hpcrt.checkpoint.bench`` (figures come from the full run in
    docs/CHECKPOINT_BENCHMARKS.md, never from a test)."""
    out = tmp_path / "rows.json"
    run = launch(["-m", "hpcrt.checkpoint.bench", "--sizes-mb", "1", "--repeats", "1", "--loop-mb", "1",
                  "--loop-steps", "3", "--loop-rounds", "1", "--dir", str(tmp_path / "b"), "--json", str(out)],
                 ranks=1, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    rows = json.loads(out.read_text())
    assert {r["bench"] for r in rows} == {"save_blocking", "snapshot", "flush", "restore", "loop"}
    assert {r["level"] for r in rows if r["bench"] == "flush"} == {"local", "global"}
    assert {r["level"] for r in rows if r["bench"] == "restore"} == {"local", "global"}
    assert {r["mode"] for r in rows if r["bench"] == "loop"} == {"none", "async", "async_no_overlap", "sync_h5py"}
