"""NIC-aware process groups: placing a (pp, dp, tp) layout on the ranks."""
