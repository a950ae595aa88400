"""Where evaluation keeps what it computes once: judge classifiers, reference statistics.

``$GANRUN_CACHE`` (default ``~/.cache/ganrun``). Entries are keyed by a fingerprint
of the real data (its bytes and labels), so a changed dataset never reuses stale
statistics, and written atomically (temporary file + rename).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Optional

import torch


def cache_dir() -> Path:
    return Path(os.environ.get("GANRUN_CACHE", "~/.cache/ganrun")).expanduser()


def fingerprint(data: torch.Tensor, labels: Optional[torch.Tensor] = None) -> str:
    """12 hex digits identifying a dataset's contents (shape, bytes, labels)."""
    digest = hashlib.sha1(str(tuple(data.shape)).encode())
    digest.update(data.contiguous().numpy().tobytes())
    if labels is not None:
        digest.update(labels.contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


def load(path: Path) -> Optional[Any]:
    """The cached object at ``path``, or None when absent, unreadable or holding anything but
    tensors and plain data (then it is rebuilt: a planted pickle never runs)."""
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None


def save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    torch.save(obj, partial)
    os.replace(partial, path)
