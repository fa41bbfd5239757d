"""allreduce, allgather and reduce_scatter: the entry call, the ring schedule engine and the plain-MPI baseline."""
