"""A scikit-learn model stored with skops, the default for scikit-learn estimators.

skops never unpickles: it rebuilds only types it trusts. The IO manager records the types the
model needs at write time in the signed header, and on read trusts exactly those (after the
signature verified). No ``serialization_module`` is needed: skops is chosen automatically.
"""

from typing import Any

from dagster import AssetIn, Definitions, asset, define_asset_job
from examples.common import IO_MANAGER_KEY, resources


@asset(
    io_manager_key=IO_MANAGER_KEY,
    metadata={"wandb_artifact_configuration": {"type": "model"}},
    group_name="skops_model",
)
def skops_iris_pipeline() -> Any:
    """A scaler + PCA + logistic regression pipeline (stored as ``output.skops``)."""
    from sklearn.datasets import load_iris
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_iris(return_X_y=True)
    model = make_pipeline(StandardScaler(), PCA(n_components=3), LogisticRegression(max_iter=300))
    return model.fit(x, y)


@asset(
    ins={"skops_iris_pipeline": AssetIn(input_manager_key=IO_MANAGER_KEY)},
    group_name="skops_model",
)
def skops_prediction(skops_iris_pipeline: Any) -> list[int]:
    """Predict two flowers with the verified model."""
    flowers = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
    return [int(v) for v in skops_iris_pipeline.predict(flowers)]


defs = Definitions(
    assets=[skops_iris_pipeline, skops_prediction],
    jobs=[define_asset_job("skops_model_job", selection=[skops_iris_pipeline, skops_prediction])],
    resources=resources(),
)
