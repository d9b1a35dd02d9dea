"""Stage metrics and the test report."""

import torch
from torch import nn
from torchmetrics.functional.classification import multiclass_f1_score

from video_cnn_rnn.models.metrics import assemble_test_report, per_class_metrics, stage_metrics


def test_macro_metrics_stay_top1_when_the_first_batch_is_all_correct() -> None:

    metrics = stage_metrics(6, "test")
    first = torch.tensor([0, 0, 1, 1])  # all right: top-1 and top-5 states coincide after this batch
    metrics.update(nn.functional.one_hot(first, 6).float() * 5, first)
    torch.manual_seed(0)
    labels, logits = torch.tensor([2, 3, 4, 5, 2, 3]), torch.randn(6, 6)
    metrics.update(logits, labels)
    values = metrics.compute()
    all_labels = torch.cat([first, labels])
    all_preds = torch.cat([first, logits.argmax(-1)])
    expected = multiclass_f1_score(all_preds, all_labels, 6, average="macro")
    torch.testing.assert_close(values["test_f1"], expected)
    assert values["test_acc_top5"] > values["test_f1"]


def test_test_report_rows_follow_the_confusion_matrix() -> None:
    per_class = per_class_metrics(3)
    per_class.update(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2]))  # one "c" predicted as "b"
    report = assemble_test_report(per_class, ["a", "b", "c"], {"test_acc": 0.75})
    assert report["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    assert [row["support"] for row in report["per_class"]] == [1, 1, 2]
    assert [row["recall"] for row in report["per_class"]] == [1.0, 1.0, 0.5]
    assert report["per_class"][1]["precision"] == 0.5
    assert report["metrics"] == {"test_acc": 0.75}
