"""An ONNX multi-asset (a model converted with skl2onnx, and its test set) and an inference asset.

The ONNX model is stored as a signed ONNX payload (checked with ``onnx.checker`` after the
signature verified); the test set is a signed pickle. Inference uses the pure-Python
``onnx.reference.ReferenceEvaluator`` so the example needs no runtime that talks to the network
(onnxruntime looks up a telemetry host). Needs the ``onnx`` extra and ``skl2onnx``.
"""

from typing import Any

from dagster import AssetIn, AssetOut, Definitions, asset, define_asset_job, multi_asset
from examples.common import IO_MANAGER_KEY, resources


@multi_asset(
    outs={
        "iris_onnx_model": AssetOut(
            io_manager_key=IO_MANAGER_KEY,
            metadata={"wandb_artifact_configuration": {"type": "model"}},
        ),
        "iris_test_set": AssetOut(
            io_manager_key=IO_MANAGER_KEY,
            metadata={"wandb_artifact_configuration": {"type": "dataset"}},
        ),
    },
    group_name="onnx_model",
)
def onnx_model_and_test_set() -> tuple[Any, dict[str, Any]]:
    import numpy as np
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    x, y = load_iris(return_X_y=True)
    x = x.astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=0)
    model = LogisticRegression(max_iter=300).fit(x_train, y_train)
    onnx_model = to_onnx(model, x_train[:1], options={"zipmap": False}, target_opset=17)
    return onnx_model, {"x": x_test, "y": y_test}


@asset(
    ins={
        "iris_onnx_model": AssetIn(input_manager_key=IO_MANAGER_KEY),
        "iris_test_set": AssetIn(input_manager_key=IO_MANAGER_KEY),
    },
    group_name="onnx_model",
)
def onnx_inference(iris_onnx_model: Any, iris_test_set: dict[str, Any]) -> dict[str, float]:
    """Run the verified ONNX model on the verified test set."""
    from onnx.reference import ReferenceEvaluator

    session = ReferenceEvaluator(iris_onnx_model)
    input_name = iris_onnx_model.graph.input[0].name
    labels = session.run(None, {input_name: iris_test_set["x"]})[0]
    accuracy = float((labels == iris_test_set["y"]).mean())
    return {"accuracy": accuracy, "rows": float(len(labels))}


defs = Definitions(
    assets=[onnx_model_and_test_set, onnx_inference],
    jobs=[define_asset_job("onnx_model_job", selection=[onnx_model_and_test_set, onnx_inference])],
    resources=resources(),
)
