"""``hpcrt diagnose RUN_DIR``: merge the monitor's dumps, heartbeats and exit records of a job
(running or torn down) into who never entered which collective, who did what last, where each rank
was stuck, and who died first. Missing or damaged files are named; the rest is still reported."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

from hpcrt.monitor.diagnose_files import job_size, read_checked, read_lines, read_rank_files
from hpcrt.monitor.sidechannel import MonitorDir

TEARDOWN_S = 5.0
"""Ranks that ended within this long after the first death were taken down with the job."""
CLOCK_TIE_S = 0.25
"""Ends closer than this are too close to order by the sentinels' clocks: a sentinel records its
rank's end when it is next scheduled, which on a node busy with ranks spinning in MPI can be tens
of milliseconds late, while a launcher like mpiexec kills the rest of the job within milliseconds."""


def find_monitor_dir(path: Path) -> MonitorDir:
    """The monitor directory of a run directory (or the monitor directory itself)."""
    path = Path(path)
    return MonitorDir(path / "monitor" if (path / "monitor").is_dir() else path)


def _no_monitor(mdir: MonitorDir) -> bool:
    """Whether a folder that exists holds no monitor's files at all (a run directory of a job that
    started no monitor), as opposed to a monitor folder whose files are missing or damaged."""
    return not any(p.exists() for p in (mdir.meta, mdir.heartbeats, mdir.dumps, mdir.alarm, mdir.stragglers,
                                        mdir.root / "events.jsonl"))


def diagnose(run_dir: str | Path) -> dict:
    """Everything ``hpcrt diagnose`` prints, as a dict (``problems`` lists what is missing or damaged)."""
    mdir = find_monitor_dir(Path(run_dir))
    problems: List[str] = []
    if not mdir.root.is_dir():
        return {"directory": str(mdir.root), "problems": [f"{mdir.root} does not exist"], "size": 0}
    if _no_monitor(mdir):
        return {"directory": str(mdir.root), "problems": [], "size": 0, "no_monitor": True}
    meta = job_size(mdir, problems)
    size = meta["size"]
    ranks = range(size)
    files = read_rank_files(mdir, ranks, problems)
    heartbeats, dumps, exits = files["heartbeat"], files["dump"], files["exit record"]
    missing_beats = [r for r in ranks if r not in heartbeats and not mdir.heartbeat(r).exists()]
    if missing_beats:
        problems.append(f"no heartbeat file for ranks {_ranks(missing_beats)}")
    alarm = read_checked(mdir.alarm, "alarm", problems)
    if alarm is not None:
        no_dump = [r for r in ranks if not mdir.dump(r).exists()]
        if no_dump:
            problems.append(f"no dump from ranks {_ranks(no_dump)} (stopped, dead, or killed before dumping)")
    nodes = meta.get("nodes") or [None] * size
    node_of = {r: (dumps.get(r) or heartbeats.get(r) or {}).get("node") or (nodes[r] if r < len(nodes) else None)
               for r in ranks}
    finished = [r for r in ranks if (heartbeats.get(r) or {}).get("state") == "finished"
                or (exits.get(r) or {}).get("finished")]
    return {
        "directory": str(mdir.root), "size": size, "problems": problems, "alarm": alarm,
        "finished": finished,
        "collectives": _unfinished_collectives(size, dumps, heartbeats),
        "ranks": [_rank_state(r, node_of[r], dumps.get(r), heartbeats.get(r), exits.get(r)) for r in ranks],
        "deaths": _deaths(exits, heartbeats, node_of, alarm),
        "events": read_lines(mdir.root / "events.jsonl", "event", problems),
        **_straggler_log(read_lines(mdir.stragglers, "straggler report", problems)),
    }


def _straggler_log(lines: List[dict]) -> dict:
    """The stragglers the windows named, and what a job did about them (its rebalance records)."""
    return {"stragglers": [s for report in lines for s in report.get("stragglers", [])],
            "rebalances": [report["rebalance"] for report in lines if isinstance(report.get("rebalance"), dict)]}


def _unfinished_collectives(size: int, dumps: Dict[int, dict], heartbeats: Dict[int, dict]) -> List[dict]:
    """Every collective some rank was blocked in, and for each member rank whether it entered it.
    A rank's k-th collective on a communicator is the same operation on every member, so a rank
    that entered only k of them never entered the blocked one."""
    members: Dict[str, List[int]] = {}
    counts: Dict[int, Dict[str, int]] = {}
    blocked: Dict[tuple, dict] = {}
    for rank in range(size):
        dump, beat = dumps.get(rank), heartbeats.get(rank)
        source = dump or beat
        if source is None:
            continue
        counts[rank] = source.get("counts", {})
        for comm in (dump or {}).get("comms", []):
            members[comm["label"]] = comm["members"]
        open_records = [r for r in dump["records"] if r["state"] == "entered"] if dump else beat.get("in_flight", [])
        for rec in open_records:
            if rec["kind"] == "collective":
                entry = blocked.setdefault((rec["comm"], rec["cseq"]), {
                    "comm": rec["comm"], "cseq": rec["cseq"], "op": rec["op"], "nbytes": rec["nbytes"],
                    "step": rec["step"], "blocked": []})
                entry["blocked"].append(rank)
    out = []
    for (label, cseq), entry in sorted(blocked.items(), key=lambda kv: (kv[0][0] or "", kv[0][1])):
        group = members.get(label, list(range(size)))
        entry["never_entered"] = [r for r in group if r in counts and counts[r].get(label, 0) <= cseq]
        entry["unknown"] = [r for r in group if r not in counts]
        entry["members"] = group
        out.append(entry)
    return out


def _rank_state(rank: int, node: Optional[str], dump: Optional[dict], beat: Optional[dict],
                exit_record: Optional[dict]) -> dict:
    state: dict = {"rank": rank, "node": node, "dump": dump is not None,
                   "heartbeat": None if beat is None else beat.get("state"),
                   "last_step": _last_step(dump, beat, exit_record), "last_completed": None, "stuck_in": None,
                   "stack": None, "ended": exit_record is not None and not exit_record.get("finished"),
                   "finished": (beat or {}).get("state") == "finished" or bool((exit_record or {}).get("finished"))}
    if dump is not None:
        done = [r for r in dump["records"] if r["state"] == "completed" and r["kind"] != "step"]
        state["last_completed"] = done[-1] if done else None
        open_records = [r for r in dump["records"] if r["state"] == "entered"]
        state["stuck_in"] = open_records[-1] if open_records else None
        main = [t for t in dump.get("stacks", []) if t.get("main")]
        state["stack"] = main[0]["stack"][-3:] if main else None
    elif beat is not None:
        state["last_completed"] = beat.get("last_completed")
        state["stuck_in"] = (beat.get("in_flight") or [None])[-1]
        state["silent_since"] = beat.get("time")
    return state


def _last_step(dump: Optional[dict], beat: Optional[dict], exit_record: Optional[dict]) -> Optional[int]:
    """The step the rank was at when it ended, else the one its dump recorded, else its last heartbeat's."""
    for source in (exit_record, dump, beat):
        if source is not None and source.get("step") is not None:
            return source["step"]
    return None


def _deaths(exits: Dict[int, dict], heartbeats: Dict[int, dict], node_of: Dict[int, Optional[str]],
            alarm: Optional[dict]) -> List[dict]:
    """Ranks that ended without finishing, first death first; the later ones within
    ``TEARDOWN_S`` are marked as taken down with the job. Ends after the monitor's alarm are its
    own abort, not deaths. Among ends within ``CLOCK_TIE_S`` of the earliest, when every one of
    them has its progress on record, a rank that was not blocked in a collective goes before one
    that was (it was waited on), then the lowest step; the clock only breaks ties of progress."""
    after = alarm.get("time", float("inf")) if alarm else float("inf")
    ended = sorted((e["ended_at"], r) for r, e in exits.items() if not e.get("finished") and e["ended_at"] < after)
    if not ended:
        return []
    tied = [(at, r) for at, r in ended if at - ended[0][0] < CLOCK_TIE_S]
    by_progress = len(tied) > 1 and all(exits[r].get("step") is not None for _, r in tied)
    if by_progress:
        first = min(tied, key=lambda e: (bool(exits[e[1]].get("in_collective")), exits[e[1]]["step"], e[0]))
        ended.remove(first)
        ended.insert(0, first)
    first_at = ended[0][0]
    return [{"rank": rank, "node": node_of.get(rank), "ended_at": at,
             "last_step": _last_step(None, heartbeats.get(rank), exits[rank]),
             "in_collective": exits[rank].get("in_collective"), "after_first_s": at - first_at,
             "torn_down": i > 0 and at - first_at <= TEARDOWN_S,
             "ordered_by": "progress" if by_progress and (at, rank) in tied else "clock"}
            for i, (at, rank) in enumerate(ended)]


def _ranks(ranks: List[int]) -> str:
    return "{" + ", ".join(str(r) for r in ranks) + "}"


def _op(rec: Optional[dict]) -> str:
    if not rec:
        return "nothing on record"
    where = f" on {rec['comm']} #{rec['cseq']}" if rec.get("comm") else ""
    size = f", {rec['nbytes']} bytes" if rec.get("kind") == "collective" else ""
    return f"{rec['kind']} '{rec['op']}' (seq {rec['seq']}{where}{size}, step {rec['step']})"


def _clock(seconds: float) -> str:
    """A wall-clock time of day, or the number itself when no calendar holds it (a damaged file)."""
    try:
        return time.strftime("%H:%M:%S", time.localtime(seconds))
    except (OverflowError, OSError, ValueError):
        return f"{seconds:g} s since the epoch"


def format_diagnosis(d: dict) -> str:
    """The report as text."""
    lines = [f"hpcrt diagnose: {d['directory']} ({d['size']} ranks)"]
    if d.get("alarm"):
        lines.append(f"alarm raised by rank {d['alarm'].get('by')}: {d['alarm'].get('message')}")
    for p in d["problems"]:
        lines.append(f"warning: {p}")
    finished = d.get("finished", [])
    if d["size"] and len(finished) == d["size"]:
        lines.append(f"every rank finished: all {d['size']} ranks stopped their monitor normally"
                     + (" (see the alarm above)" if d.get("alarm") else "; nothing hung or died"))
    elif finished:
        lines.append(f"finished normally: ranks {_ranks(finished)}")
    for c in d.get("collectives", []):
        lines.append(f"collective '{c['op']}' ({c['comm']} #{c['cseq']}, {c['nbytes']} bytes, step {c['step']}): "
                     f"ranks {_ranks(c['blocked'])} blocked in it; never entered by ranks {_ranks(c['never_entered'])}"
                     + (f"; no data from ranks {_ranks(c['unknown'])}" if c["unknown"] else ""))
    deaths = d.get("deaths", [])
    if deaths:
        first = deaths[0]
        lines.append(f"died first: rank {first['rank']} on node {first['node']} (last step {first['last_step']})")
        tied = [x["rank"] for x in deaths[1:] if x["ordered_by"] == "progress"]
        if first["ordered_by"] == "progress":
            lines.append(f"  (ranks {_ranks(tied)} ended within {CLOCK_TIE_S * 1000:g} ms of it, too close to order by "
                         f"clock; by their progress it was the one they waited on)")
        torn = [x["rank"] for x in deaths[1:] if x["torn_down"]]
        if torn:
            lines.append(f"ended within {TEARDOWN_S:g} s after it (taken down with the job): ranks {_ranks(torn)}")
    for e in d.get("events", []):
        if e.get("kind") == "death":
            shrank = " - the survivors shrank and went on" if e.get("via") == "ulfm" else ""
            lines.append(f"death reported by rank {e.get('detected_by')}: rank {e.get('rank')} on node {e.get('node')} "
                         f"(last step {e.get('last_step')}){shrank}")
    for s in d.get("stragglers", [])[-5:]:
        lines.append(f"straggler: rank {s['rank']} on node {s.get('node')}, section '{s['section']}', "
                     f"score {s['score']:.2f}")
    for r in d.get("rebalances", [])[-5:]:
        lines.append(describe_rebalance(r))
    lines.append("rank  node  step  last completed / stuck in")
    for r in d.get("ranks", []):
        source = "dump" if r["dump"] else (f"heartbeat {r['heartbeat']}" if r["heartbeat"] else "no data")
        lines.append(f"{r['rank']:>4}  {r['node']}  {r['last_step']}  [{source}]"
                     + ("  ENDED" if r["ended"] else ""))
        lines.append(f"        last completed: {_op(r['last_completed'])}")
        lines.append(f"        stuck in:       {_op(r['stuck_in'])}")
        if not r["dump"] and r.get("silent_since"):
            last = _clock(r["silent_since"])
            lines.append(f"        finished: its monitor stopped normally at {last} (no dump needed)"
                         if r.get("finished") else
                         f"        no dump: its last heartbeat was at {last} (a stopped or killed rank cannot dump)")
        for frame in r["stack"] or []:
            lines.append("        | " + frame.rstrip().replace("\n", "\n        | "))
    return "\n".join(lines)


def describe_rebalance(record: dict) -> str:
    """A job's rebalance decision (a ``rebalance`` line of the straggler log): which rank was slow
    in its compute and the shares it got, or which slow ranks were only reported."""
    if not record.get("changed"):
        held = (f"; ranks {record['held']} slow in compute keep shares {record.get('shares')} (a change "
                "needs two windows in a row beyond the threshold, and a whole split that differs)"
                if record.get("held") else "")
        outside = (f"; ranks {record['reported_not_rebalanced']} slow outside compute (links or waiting): "
                   "reported, not rebalanced" if record.get("reported_not_rebalanced") else "")
        return f"rebalance at step {record.get('step')}: no change{held}{outside}"
    slowdown = record.get("slowdown") or [1.0]
    slowest = max(range(len(slowdown)), key=lambda r: slowdown[r])
    return (f"rebalance at step {record.get('step')}: rank {slowest} computed {slowdown[slowest]:.2f}x slower; "
            f"shares [sequences, tokens] per rank from step {record.get('applies_from')}: {record.get('shares')}")


def run_diagnose(run_dir: str, as_json: bool = False) -> int:
    """The ``hpcrt diagnose`` command: print the report (damaged files named in it) and exit 0; when
    there is nothing to report on, one line on stderr and exit code 2."""
    try:
        d = diagnose(run_dir)
        text = json.dumps(d, indent=2, default=str) if as_json else format_diagnosis(d)
    except (OSError, ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
        # a defence behind the files' checks: a damaged file they missed still gives one line
        print(f"hpcrt diagnose: error: cannot report on {run_dir}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    if d.get("no_monitor"):
        print(f"hpcrt diagnose: error: no monitor ran in this job: {run_dir} has no monitor/ folder", file=sys.stderr)
        return 2
    if d["size"] == 0:
        why = "; ".join(d["problems"]) or "no rank wrote a file"
        print(f"hpcrt diagnose: error: nothing to report in {d['directory']}: {why}", file=sys.stderr)
        return 2
    print(text, flush=True)
    return 0
