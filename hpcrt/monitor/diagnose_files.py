"""The monitor's files as ``hpcrt diagnose`` reads them, trusting none: each is read with a size cap
and a JSON depth limit (:mod:`hpcrt.core.files`) and checked against the shape its writer gives it; a
file that is anything else is named in ``problems`` and skipped, so the rest can still be reported."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Dict, List, Optional

from hpcrt.core.files import FileRefused, parse_json, read_capped, read_json_capped
from hpcrt.monitor.sidechannel import MonitorDir

MAX_RANKS = 1 << 20
"""A world size above this is taken for damage, not for a job (every rank is reported line by line)."""
RECORD = {"seq": int, "kind": str, "op": str, "comm": (str, None), "cseq": int, "nbytes": int, "step": int,
          "state": str}
"""A flight-recorder record as dumps and heartbeats carry it (see ``FlightRecorder.describe``)."""
COUNTS = {"*": int}
SHAPES = {
    "heartbeat": {"node?": (str, None), "state?": (str, None), "step?": (int, None), "counts?": COUNTS,
                  "in_flight?": [RECORD], "last_completed?": (RECORD, None), "time?": (float, None)},
    "dump": {"records": [RECORD], "node?": (str, None), "step?": (int, None), "counts?": COUNTS,
             "comms?": [{"label": str, "members": [int]}], "stacks?": [{"main?": bool, "stack": [str]}]},
    "exit record": {"ended_at": float, "finished?": (bool, None), "step?": (int, None),
                    "in_collective?": (bool, None)},
    "alarm": {"by?": (int, None), "message?": (str, None), "time?": (float, None), "kind?": (str, None)},
    "job.json": {"size": int, "nodes?": ([(str, None)], None)},
    "event": {"kind?": (str, None), "rank?": int, "node?": (str, None), "detected_by?": (int, None),
              "last_step?": (int, None), "via?": (str, None)},
    "straggler report": {"stragglers?": [{"rank": int, "node?": (str, None), "section": str, "score": float}]},
}
_RANK_FILE = re.compile(r"rank-(\d+)\.json")


def mismatch(value: Any, spec: Any, where: str = "") -> Optional[str]:
    """Where ``value`` departs from ``spec``, or None. A spec is a type (``float``: a finite
    number; ``int``: not a bool), a tuple of alternatives (``None`` allows null), a one-item list
    (a list of such items) or a dict of keys (``key?`` optional, ``*`` any key; others ignored)."""
    if isinstance(spec, tuple):
        fits = any(value is None if alt is None else mismatch(value, alt, where) is None for alt in spec)
        return None if fits else f"{where or 'top level'}: unexpected {_show(value)}"
    if isinstance(spec, list):
        if not isinstance(value, list):
            return f"{where or 'top level'}: expected a list, got {_show(value)}"
        return next((m for i, item in enumerate(value) if (m := mismatch(item, spec[0], f"{where}[{i}]"))), None)
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            return f"{where or 'top level'}: expected an object, got {_show(value)}"
        if "*" in spec:
            checks = [(key, spec["*"]) for key in value]
        else:
            checks = [(key.rstrip("?"), sub) for key, sub in spec.items() if not key.endswith("?") or key[:-1] in value]
        for key, sub in checks:
            here = f"{where}.{key}" if where else key
            found = f"{here}: missing" if key not in value else mismatch(value[key], sub, here)
            if found:
                return found
        return None
    fits = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if spec is float else isinstance(value, spec) and not (spec is int and isinstance(value, bool)))
    return None if fits else f"{where or 'top level'}: expected {spec.__name__}, got {_show(value)}"


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def read_checked(path: Path, what: str, problems: List[str]) -> Optional[Any]:
    """The file's JSON when it has the shape of ``what``; None when it is missing, else a problem
    naming it and why it was skipped."""
    try:
        data = read_json_capped(path)
    except FileNotFoundError:
        return None
    except FileRefused as exc:
        problems.append(f"{what} {path.name} {exc}; ignored")
        return None
    found = mismatch(data, SHAPES[what])
    if found:
        problems.append(f"{what} {path.name} is damaged ({found}); ignored")
        return None
    return data


def read_rank_files(mdir: MonitorDir, ranks: range, problems: List[str]) -> Dict[str, Dict[int, dict]]:
    """Every rank's heartbeat, dump and exit record that is whole, by kind and rank."""
    out: Dict[str, Dict[int, dict]] = {}
    for what, path_of in (("heartbeat", mdir.heartbeat), ("dump", mdir.dump), ("exit record", mdir.exit_record)):
        out[what] = {}
        for rank in ranks:
            found: List[str] = []
            data = read_checked(path_of(rank), what, found)
            problems.extend(f"rank {rank}: {p}" for p in found)
            if data is not None:
                out[what][rank] = data
    return out


def read_lines(path: Path, what: str, problems: List[str]) -> List[dict]:
    """The whole lines of a JSON-lines file of ``what`` entries; a damaged line is named and skipped."""
    try:
        text = read_capped(path)
    except FileNotFoundError:
        return []
    except FileRefused as exc:
        problems.append(f"{path.name} {exc}; ignored")
        return []
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            entry = parse_json(line)
            found = mismatch(entry, SHAPES[what])
        except FileRefused:
            found = "truncated or unreadable"
        if found:
            problems.append(f"{path.name} line {number} is {found}; skipped")
        else:
            entries.append(entry)
    return entries


def job_size(mdir: MonitorDir, problems: List[str]) -> dict:
    """``job.json`` (world size and nodes) when it is whole and its size plausible, else a size
    guessed from the rank files present (named in ``problems``)."""
    meta = read_checked(mdir.meta, "job.json", problems)
    if meta is not None and not 0 < meta["size"] <= MAX_RANKS:
        problems.append(f"job.json gives {meta['size']} ranks, not a world size (1..{MAX_RANKS}); ignored")
        meta = None
    if meta is not None:
        return meta
    seen = set()
    for folder in (mdir.heartbeats, mdir.dumps):
        for name in _names(folder, problems):
            match = _RANK_FILE.fullmatch(name)
            if match and int(match.group(1)) >= MAX_RANKS:
                problems.append(f"{folder.name}/{name} is named for a rank beyond {MAX_RANKS}; ignored")
            elif match:
                seen.add(int(match.group(1)))
    problems.append(f"{mdir.meta.name} is missing or unreadable: the world size is guessed from the files")
    return {"size": max(seen, default=-1) + 1, "nodes": []}


def _names(folder: Path, problems: List[str]) -> List[str]:
    try:
        return [entry.name for entry in folder.iterdir()] if folder.is_dir() else []
    except OSError as exc:
        problems.append(f"{folder.name}/ cannot be listed ({exc.strerror}); ignored")
        return []
