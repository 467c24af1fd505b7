"""The smallest example: an asset returning a list, and an asset that reads it back.

The list is pickled inside a signed envelope; the reader verifies the signature before a single
byte is unpickled. Each asset also has a signature asset check (``build_signature_asset_checks``:
the UI's Checks tab) that re-verifies its latest stored version. Run it::

    dagster-wandb-secure keys init -k .examples/keys
    dagster dev -f examples/simple_assets.py
"""


from dagster import AssetExecutionContext, AssetIn, Definitions, asset, define_asset_job
from dagster_wandb_secure import build_signature_asset_checks
from examples.common import IO_MANAGER_KEY, resources


@asset(
    io_manager_key=IO_MANAGER_KEY,
    metadata={"wandb_artifact_configuration": {"type": "dataset"}},
    group_name="simple",
)
def my_first_list() -> list[int]:
    """Stored as the artifact ``my_first_list`` (a signed pickle)."""
    return [1, 2, 3]


@asset(
    ins={"my_first_list": AssetIn(input_manager_key=IO_MANAGER_KEY)},
    io_manager_key=IO_MANAGER_KEY,
    metadata={"wandb_artifact_configuration": {"type": "dataset"}},
    group_name="simple",
)
def my_list_doubled(context: AssetExecutionContext, my_first_list: list[int]) -> list[int]:
    """Reads ``my_first_list`` (verified first) and stores a new artifact."""
    context.log.info(f"read {my_first_list}")
    return [2 * x for x in my_first_list]


# one check per asset: re-verifies the latest stored version's signature (Checks tab)
signature_checks = build_signature_asset_checks(
    [my_first_list, my_list_doubled], io_manager_key=IO_MANAGER_KEY
)

defs = Definitions(
    assets=[my_first_list, my_list_doubled],
    asset_checks=signature_checks,
    jobs=[define_asset_job("simple_job", selection=[my_first_list, my_list_doubled])],
    resources=resources(),
)
