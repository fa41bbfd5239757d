"""``hpcrt ckpt``: the checkpoint directory from the command line."""
