"""What every collective shares: point-to-point transport, message pools, per-link byte counts, the
cross-rank agreement check, tracing, block bounds and reduction ops."""
