"""A model serialized with joblib (chosen explicitly) and an inference asset that uses it.

joblib is a pickle-family format, so the model is stored inside a signed envelope and verified
before joblib sees a byte. For scikit-learn models the default is skops (see
``skops_model.py``); choose joblib only when every writer of the artifact is trusted.
"""

from typing import Any

from dagster import AssetIn, Definitions, asset, define_asset_job
from examples.common import IO_MANAGER_KEY, resources


def iris() -> tuple[Any, Any]:
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True)
    return x, y


@asset(
    io_manager_key=IO_MANAGER_KEY,
    metadata={
        "wandb_artifact_configuration": {
            "type": "model",
            "description": "Logistic regression on iris, stored with joblib (signed)",
            "serialization_module": {"name": "joblib", "parameters": {"compress": 3}},
        }
    },
    group_name="joblib_model",
)
def joblib_iris_model() -> Any:
    from sklearn.linear_model import LogisticRegression

    x, y = iris()
    return LogisticRegression(max_iter=300).fit(x, y)


@asset(
    ins={"joblib_iris_model": AssetIn(input_manager_key=IO_MANAGER_KEY)},
    group_name="joblib_model",
)
def joblib_inference(joblib_iris_model: Any) -> dict[str, float]:
    """Accuracy of the verified model on the training data (a smoke test, not an evaluation)."""
    x, y = iris()
    return {"accuracy": float((joblib_iris_model.predict(x) == y).mean())}


defs = Definitions(
    assets=[joblib_iris_model, joblib_inference],
    jobs=[define_asset_job("joblib_model_job", selection=[joblib_iris_model, joblib_inference])],
    resources=resources(),
)
