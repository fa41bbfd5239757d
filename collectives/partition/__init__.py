"""Hierarchical ZeRO-style partitioning: levels, the shard plan, the partitioner and its benchmark."""
