"""The HDF5 format: rank files, the global file, manifests, and the flattening of a state dict into entries."""
