"""Token lists: the vocabulary of a model, one token per line (ESPnet's ``tokens.txt``) or the
inline list ESPnet stores in ``config.yaml``. The id of a token is its line number from 0.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence, Union

__all__ = ["read_token_list"]


def read_token_list(token_list: Union[str, os.PathLike, Sequence[str]], stage: str = "token") -> list[str]:
    """The tokens of a token-list file, or of an inline list (returned as a new list).

    A file's lines are the tokens as written (only the line break is removed, so a token may
    hold spaces, e.g. ``" |"``). An empty line, an empty list and a repeated token are errors:
    an empty line skipped or kept would silently shift or duplicate ids.

    Args:
        token_list: a path or a sequence of strings.
        stage: the recipe stage that writes the file, named when it is missing.

    Raises:
        FileNotFoundError: the file does not exist; ValueError: empty, an empty line, a repeated
            token; the message names the file and line.
    """
    if isinstance(token_list, (list, tuple)):
        tokens, where = list(token_list), "token_list"
    elif isinstance(token_list, (str, os.PathLike)):
        path = Path(token_list)
        if not path.is_file():
            raise FileNotFoundError(f"token list {path} does not exist (run the {stage} stage)")
        with path.open(encoding="utf-8") as f:
            tokens = [line.rstrip("\r\n") for line in f]
        where = str(path)
    else:
        raise TypeError(f"token_list must be a path or a list of strings, got {type(token_list).__name__}")
    if not tokens:
        raise ValueError(f"{where}: the token list is empty")
    seen: dict[str, int] = {}
    for i, tok in enumerate(tokens):
        if not isinstance(tok, str) or tok == "":
            raise ValueError(f"{where}: entry {i} (line {i + 1}) is {tok!r}; every token must be a non-empty string")
        if tok in seen:
            raise ValueError(f"{where}: token {tok!r} appears twice (lines {seen[tok] + 1} and {i + 1})")
        seen[tok] = i
    return tokens
