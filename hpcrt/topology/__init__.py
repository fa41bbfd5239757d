"""The job's topology: discovery of NICs, CPUs and GPUs, topology files that override it, and the table
every rank holds."""
