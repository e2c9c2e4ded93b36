"""Settings of the web application (``rareseg serve`` flags, or a dict given to ``create_app``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from rareseg.inference import check_options

#: Bytes per megabyte of the upload limit.
MEGABYTE = 2**20
#: Shortest access token accepted (``secrets.token_urlsafe()`` gives 43 characters).
MIN_TOKEN_LENGTH = 16


@dataclass(frozen=True)
class WebConfig:
    """Settings of one web application.

    Attributes:
        checkpoint: RareSegModule checkpoint loaded once when the app is created (not needed
            when ``create_app`` is given a loaded predictor).
        jobs_dir: folder holding one sub-folder per job (default: a new temporary folder).
        max_upload_mb: largest accepted request body in MB (``2**20`` bytes); bigger uploads get 413.
        workers: scenes predicted at the same time (threads sharing the model; forward passes
            take turns).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        precision: ``32`` or ``bf16``.
        tile: tile side in pixels.
        overlap: pixels shared by neighbouring tiles.
        batch_size: tiles per forward pass.
        topk: default top-k saliency percentage shown on the page.
        preview_side: longer side of the PNG previews in pixels.
        keep_jobs: finished jobs kept on disk; the oldest are deleted beyond this.
        max_job_age_hours: a job is deleted this long after it finished (and job folders left in
            ``jobs_dir`` by an earlier server once they are this old).
        token: access token every request must carry (``Authorization: Bearer``, ``?token=``, or the
            cookie the page gets from ``/?token=``); None lets anyone who can connect in.
    """

    checkpoint: str | Path | None = None
    jobs_dir: str | Path | None = None
    max_upload_mb: float = 1024.0
    workers: int = 2
    device: str = "auto"
    precision: str = "32"
    tile: int = 512
    overlap: int = 64
    batch_size: int = 8
    topk: float = 10.0
    preview_side: int = 1024
    keep_jobs: int = 100
    max_job_age_hours: float = 24.0
    token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        """Reject settings that cannot work, with a one-line ValueError."""
        if not self.max_upload_mb > 0:
            raise ValueError(f"max_upload_mb must be > 0, got {self.max_upload_mb}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.keep_jobs < 1:
            raise ValueError(f"keep_jobs must be >= 1, got {self.keep_jobs}")
        if not self.max_job_age_hours > 0:
            raise ValueError(f"max_job_age_hours must be > 0, got {self.max_job_age_hours}")
        if self.token is not None and (
            len(self.token) < MIN_TOKEN_LENGTH or not self.token.isprintable() or any(c.isspace() for c in self.token)
        ):
            raise ValueError(
                f"the access token must be at least {MIN_TOKEN_LENGTH} printable characters without spaces "
                '(make one with: python -c "import secrets; print(secrets.token_urlsafe())")'
            )
        check_options(self.tile, self.overlap, self.batch_size, self.topk, None, self.preview_side)

    @classmethod
    def from_mapping(cls, settings: Mapping[str, Any]) -> WebConfig:
        """Build from a dict of attribute names; unknown keys raise a ValueError naming them."""
        known = {item.name for item in fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ValueError(f"unknown web settings: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        return cls(**settings)

    @property
    def max_upload_bytes(self) -> int:
        """The upload limit in bytes, ``max_upload_mb * 2**20``."""
        return int(self.max_upload_mb * MEGABYTE)

    @property
    def max_job_age_seconds(self) -> float:
        """:attr:`max_job_age_hours` in seconds."""
        return self.max_job_age_hours * 3600.0
