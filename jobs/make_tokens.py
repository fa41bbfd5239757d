"""``python -m hpcrt.jobs.make_tokens TEXT OUT``: a token file for ``data=tokens`` from a UTF-8 text
file — its bytes as uint16 tokens in one flat array (the small-GPT convention), so vocab 256 fits."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np


def make_tokens(text: Path, out: Path) -> int:
    """Write ``text``'s bytes to ``out`` as uint16 tokens; the token count."""
    data = text.read_bytes()
    data.decode("utf-8")  # refuse what is not text: the tokens are meant to be a UTF-8 corpus
    if not data:
        raise ValueError("empty: a token file needs text")
    tokens = np.frombuffer(data, dtype=np.uint8).astype(np.uint16)
    tmp = out.with_name(out.name + ".tmp")
    tokens.tofile(tmp)
    tmp.replace(out)
    return len(tokens)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hpcrt.jobs.make_tokens", description=__doc__.splitlines()[0])
    parser.add_argument("text", type=Path, help="a UTF-8 text file")
    parser.add_argument("out", type=Path, help="the token file to write (uint16)")
    args = parser.parse_args(argv)
    try:
        count = make_tokens(args.text, args.out)
    except (OSError, ValueError) as error:
        print(f"make_tokens: {args.text}: {error}", file=sys.stderr)
        return 2
    print(f"wrote {count} tokens (vocab 256: use model.vocab=256) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
