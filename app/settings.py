"""One settings object for the whole application (environment prefix ``LVT_``).

The defaults make everything run embedded: SQLite at ``var/lvt.db``, images under
``var/data``, the model shipped inside :mod:`lvt_core`, and automatic device choice.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

SHIPPED_MODEL = Path(__file__).resolve().parent.parent / "lvt_core" / "models" / "lvt_default.pt"


class Settings(BaseSettings):
    """Runtime configuration, read from ``LVT_*`` environment variables or a ``.env`` file."""

    model_config = SettingsConfigDict(env_prefix="LVT_", env_file=".env", extra="ignore")

    var_dir: Path = Field(default=Path("var"), description="Root of generated state.")
    database_url: str = Field(default="", description="SQLAlchemy URL; empty means SQLite in var/.")
    data_dir: Path | None = Field(default=None, description="Content-addressed image store.")
    model_path: Path = Field(default=SHIPPED_MODEL, description="Checkpoint used by default.")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto", description=("Inference precision: auto (fp16 on CUDA; bf16 on CPUs with AMX or AVX-512 BF16 "
                                     "for models qualified for it, else fp32), fp32, or bf16."))
    workers: int = Field(default=1, ge=1, description="Batch workers (Dask processes).")
    dask_scheduler: str | None = Field(
        default=None, description="Dask scheduler every batch runs on (e.g. tcp://scheduler:8786); none: local processes.")
    secret_key: str | None = Field(default=None, description="Key for de-identification hashes.")
    deid_shift_dates: bool = Field(default=True, description="Shift dates per patient on de-id.")
    log_level: str = "INFO"
    display_min_lesion_mm: float = Field(
        default=5.0, ge=0, description="Follow-up page: hide tracks whose largest diameter stays below this."
    )
    confirm_new_lesions: bool = Field(
        default=True, description=("Model RECIST: a new lesion counts once a later study shows it again "
                                   "(false: at once)."))

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to an embedded SQLite file under ``var_dir``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.var_dir / 'lvt.db').resolve()}"

    @property
    def resolved_data_dir(self) -> Path:
        """The image store directory, defaulting to ``var_dir/data``."""
        return self.data_dir if self.data_dir is not None else self.var_dir / "data"


class SettingsError(ValueError):
    """An ``LVT_*`` variable (or ``.env`` line) with a value LVT cannot use."""


def describe_errors(exc: ValidationError) -> str:
    """One line per bad value, naming its variable, the value and what is allowed (pydantic's
    own text named the field, not the variable, under a traceback)."""
    lines = []
    for error in exc.errors():
        name = "LVT_" + "_".join(str(part) for part in error["loc"]).upper()
        lines.append(f"{name}={error.get('input')!r}: {error['msg']}")
    return "; ".join(lines)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings (cached; call ``get_settings.cache_clear()`` in tests).

    Raises :class:`SettingsError` naming each bad variable."""
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError(describe_errors(exc)) from None
