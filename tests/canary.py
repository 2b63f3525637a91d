"""A pickle that leaves a trace when it is loaded: what an attacker would store in place of a model.

``canary_pickle(path)`` unpickles by calling ``os.mkdir(path)``; a test stores it where an
artifact was and checks that ``path`` never appears (the bytes were refused before loading).
"""

from __future__ import annotations

import os
import pickle


class _Canary:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def canary_pickle(path: str) -> bytes:
    data = pickle.dumps(_Canary(str(path)))
    assert b"mkdir" in data
    return data
