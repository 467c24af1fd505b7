"""Upstream's ``dagster_wandb.utils.pickling`` path, without its unsafe loader.

The file names and module list are kept for code that refers to them. Writing and reading
pickles happen only inside the IO manager, in signed envelopes; the two upstream helpers raise
a typed error saying so (upstream's reader unpickled whatever file it found: the published
remote-code-execution advisory)."""

from __future__ import annotations

from typing import Any, NoReturn

from ..artifacts.config import WandbArtifactsIOManagerError

PICKLE_FILENAME = "output.pickle"
DILL_FILENAME = "output.dill"
CLOUDPICKLE_FILENAME = "output.cloudpickle"
JOBLIB_FILENAME = "output.joblib"
ACCEPTED_SERIALIZATION_MODULES = ["dill", "cloudpickle", "joblib", "pickle"]


def _refuse(what: str) -> NoReturn:
    raise WandbArtifactsIOManagerError(
        f"{what} is not available in dagster-wandb-secure: objects are written and read only "
        "through the IO manager, inside signed envelopes",
        hint="return the object from the asset or op (write) and declare it as an input (read); "
        "`dagster-wandb-secure adopt` re-signs legacy artifacts you trust",
    )


def pickle_artifact_content(*_: Any, **__: Any) -> NoReturn:
    _refuse("pickle_artifact_content")


def unpickle_artifact_content(*_: Any, **__: Any) -> NoReturn:
    _refuse("unpickle_artifact_content (it would unpickle unverified files)")


__all__ = [
    "ACCEPTED_SERIALIZATION_MODULES",
    "CLOUDPICKLE_FILENAME",
    "DILL_FILENAME",
    "JOBLIB_FILENAME",
    "PICKLE_FILENAME",
    "pickle_artifact_content",
    "unpickle_artifact_content",
]
