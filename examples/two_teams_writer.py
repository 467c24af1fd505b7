"""Two teams, one artifact store. This is team A, the writer.

Team A signs with an Ed25519 private key that only its runs hold, in an environment variable
(a CI or Kubernetes secret); the key is loaded into memory and never written to disk. Team B
(``two_teams_reader.py``) holds only the matching public key: it can verify, it can never sign.

Make the key pair once (any machine), give the private half to team A's secret store only::

    openssl genpkey -algorithm ed25519 -out team_a.pem
    openssl pkey -in team_a.pem -pubout -out team_a.pub.pem
    export TEAM_A_SIGNING_KEY="$(cat team_a.pem)"        # team A (writer) only
    dagster-wandb-secure keys init --no-key -k .examples/team_a_keys   # its ledger, no key
    dagster dev -f examples/two_teams_writer.py

Both key ids are derived from the key (``env-<fingerprint>``), so the writer's private PEM and the
reader's public PEM name the same key.
"""

from dagster import Definitions, asset, define_asset_job
from examples.common import IO_MANAGER_KEY, examples_home, io_manager

SIGNING_KEY_ENV = "TEAM_A_SIGNING_KEY"


@asset(
    io_manager_key=IO_MANAGER_KEY,
    metadata={"wandb_artifact_configuration": {"type": "dataset", "aliases": ["shared"]}},
    group_name="team_a",
)
def team_a_features() -> dict[str, list[float]]:
    """Features team A publishes for team B."""
    return {"sepal_length": [5.1, 4.9, 6.7], "petal_length": [1.4, 1.4, 5.2]}


defs = Definitions(
    assets=[team_a_features],
    jobs=[define_asset_job("team_a_job", selection=[team_a_features])],
    resources={
        IO_MANAGER_KEY: io_manager(
            key_store=examples_home() / "team_a_keys",  # team A's ledger lives here
            signing_key={"env": SIGNING_KEY_ENV},
        )
    },
)
