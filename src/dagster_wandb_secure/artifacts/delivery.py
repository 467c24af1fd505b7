"""Hand a verified version to user code as the read configuration asks (step 4 of a read), with
upstream's partition semantics: a partition whose ``get`` finds nothing gets the partition's
whole content instead, and the event log says which object was missing."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..core.errors import SecureArtifactError
from .config import ReadConfig, WandbArtifactsIOManagerError
from .view import verified_artifact

if TYPE_CHECKING:
    from .verification import VerifiedVersion

__all__ = ["deliver", "whole_content"]


def whole_content(verified: VerifiedVersion) -> Any:
    """The one serialized output of the version, else the verified ``wandb.Artifact``."""
    payloads = verified.payload_files()
    if len(payloads) > 1:
        raise WandbArtifactsIOManagerError(
            f"the artifact holds several serialized outputs {payloads}; use 'get' to choose one"
        )
    if payloads:
        return verified.unseal_payload(payloads[0])
    return verified_artifact(verified)


def deliver(
    verified: VerifiedVersion,
    read: ReadConfig,
    *,
    warn: Callable[[str], None],
    partition: str | None = None,
) -> Any:
    """What ``read`` asks for from ``verified`` (``get_path`` / ``get`` / the whole content).

    ``partition`` set (a partitioned asset input): a ``get`` naming an object the version does
    not hold falls back to the whole content, with a warning naming the object, as upstream."""
    try:
        if read.get_path is not None:
            return str(verified.materialize(read.get_path))
        if read.get is not None:
            value = verified_artifact(verified).get(read.get)
            if value is not None:
                return value
            if partition is None:
                raise WandbArtifactsIOManagerError(
                    f"the artifact holds no object named {read.get!r}; its files are "
                    f"{sorted(verified.entries)}",
                )
            warn(
                f"partition {partition!r}: {verified.label} holds no object named "
                f"{read.get!r} (its files are {sorted(verified.entries)}); the partition's "
                "whole content is returned instead, as dagster-wandb does"
            )
        return whole_content(verified)
    except SecureArtifactError as exc:
        raise verified.locate(exc) from None
