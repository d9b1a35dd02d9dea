"""Classification metrics per stage, and the test report assembled from them (torchmetrics, DDP-synced)."""

from __future__ import annotations

from typing import Any, Literal

from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

Stage = Literal["train", "val", "test"]


def epoch_values(metrics: MetricCollection) -> dict[str, float]:
    """The epoch's values of ``metrics``, which are then reset: already reduced across ranks (torchmetrics
    ``sync_on_compute``). {} where nothing updated them: the sanity check or an empty loader can end an epoch
    without updates, and compute() would warn."""
    if not any(m.update_count for m in metrics.values()):
        return {}
    values = {name: float(value) for name, value in metrics.compute().items()}
    metrics.reset()
    return values


def stage_metrics(num_classes: int, stage: Stage) -> MetricCollection:
    """Epoch-level metrics for one stage; torchmetrics syncs their states across DDP ranks on compute."""
    metrics: dict[str, Any] = {"acc": MulticlassAccuracy(num_classes, average="micro")}
    if stage != "train":
        if num_classes > 5:
            metrics["acc_top5"] = MulticlassAccuracy(num_classes, top_k=5, average="micro")
        metrics["precision"] = MulticlassPrecision(num_classes, average="macro")
        metrics["recall"] = MulticlassRecall(num_classes, average="macro")
        metrics["f1"] = MulticlassF1Score(num_classes, average="macro")
    # No compute groups: torchmetrics merges metrics whose states are equal after the first batch, and a first
    # batch whose labels are all in the top 1 makes top-5 accuracy's states equal the macro metrics' states, after
    # which precision/recall/F1 were computed from top-5 predictions (F1 1.0 beside 78% accuracy).
    return MetricCollection(metrics, prefix=f"{stage}_", compute_groups=False)


def per_class_metrics(num_classes: int) -> MetricCollection:
    """Precision, recall and F1 of every class, and the confusion matrix (rows: true classes)."""
    return MetricCollection(
        {
            "precision": MulticlassPrecision(num_classes, average=None),
            "recall": MulticlassRecall(num_classes, average=None),
            "f1": MulticlassF1Score(num_classes, average=None),
            "confusion_matrix": MulticlassConfusionMatrix(num_classes),
        }
    )


def assemble_test_report(
    per_class: MetricCollection, class_names: list[str], metrics: dict[str, float]
) -> dict[str, Any]:
    """The report ``reports.write_test_report`` writes: per-class rows, the confusion matrix and ``metrics``."""
    values = {name: value.cpu() for name, value in per_class.compute().items()}
    confusion = values["confusion_matrix"]
    support = confusion.sum(dim=1)  # rows are true classes
    return {
        "class_names": class_names,
        "per_class": [
            {
                "class": name,
                "precision": float(values["precision"][i]),
                "recall": float(values["recall"][i]),
                "f1": float(values["f1"][i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        ],
        "confusion_matrix": confusion.long().tolist(),
        "metrics": metrics,
    }
