"""The α-β cost model's core: the typed table of costs the runtime owns (:mod:`.table`), the
link-level formulas that read it (:mod:`.model`), the link and schedule measurements taken in the
job they serve (:mod:`.links`) and the one timed loop of every benchmark and calibration (:mod:`.timing`)."""
