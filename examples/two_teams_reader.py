"""Two teams, one artifact store. This is team B, the reader.

Team B reads what team A (``two_teams_writer.py``) publishes. It holds only team A's *public* key,
from an environment variable, so it can verify team A's artifacts but cannot sign anything: an
artifact signed by any other key (or not signed, or changed) is refused before it is unpickled.
Team A's artifact is declared as a ``SourceAsset`` (made outside this code location)::

    export TEAM_A_PUBLIC_KEY="$(cat team_a.pub.pem)"     # team B (reader): public key only
    dagster-wandb-secure keys init --no-key -k .examples/team_b_keys   # its ledger, no key
    dagster dev -f examples/two_teams_reader.py

Instead of the environment variable, team B can keep the key in its key store:
``dagster-wandb-secure keys import-public team_a.pub.pem`` (it prints the fingerprint to compare
with team A out of band; envelopes are matched to the key by fingerprint, whatever its key id).
"""

from dagster import AssetIn, AssetKey, Definitions, SourceAsset, asset, define_asset_job
from examples.common import IO_MANAGER_KEY, examples_home, io_manager

PUBLIC_KEY_ENV = "TEAM_A_PUBLIC_KEY"

team_a_features = SourceAsset(
    key=AssetKey("team_a_features"),
    io_manager_key=IO_MANAGER_KEY,
    description="Published and signed by team A",
    group_name="team_b",
)


@asset(
    ins={"team_a_features": AssetIn(input_manager_key=IO_MANAGER_KEY)},
    group_name="team_b",
)
def team_b_report(team_a_features: dict[str, list[float]]) -> dict[str, float]:
    """Uses team A's features, verified against team A's public key."""
    return {name: max(values) for name, values in team_a_features.items()}


defs = Definitions(
    assets=[team_a_features, team_b_report],
    jobs=[define_asset_job("team_b_job", selection=[team_b_report])],
    resources={
        IO_MANAGER_KEY: io_manager(
            key_store=examples_home() / "team_b_keys",  # team B's own ledger, no private key
            signing_key={"env": PUBLIC_KEY_ENV},  # a public key: verify-only
        )
    },
)
