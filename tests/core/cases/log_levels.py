"""Every rank logs one message at each level through the ``hpcrt`` logger and prints, as JSON, the
run directory it was given; ``hpcrt.init`` gets ``log_level`` from argv[1] and nothing else."""

import json
import logging
import sys

import hpcrt

rt = hpcrt.init({"log_level": sys.argv[1]})
log = logging.getLogger("hpcrt")
for level in ("debug", "info", "warning"):
    getattr(log, level)(f"{level} from rank {rt.rank}")
print(json.dumps({"rank": rt.rank, "run_dir": str(rt.run_dir)}), flush=True)
hpcrt.finalize()
