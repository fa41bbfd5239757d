"""Array backends: numpy, CuPy and the fake GPU behind one interface, and how their buffers reach MPI
(CUDA-aware or staged)."""
