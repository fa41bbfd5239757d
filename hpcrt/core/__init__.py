"""The runtime core: init/finalize, configuration, launcher and run directory, logging, the abort hook,
graceful stop and requeue, and the trace hook collectives report through."""
