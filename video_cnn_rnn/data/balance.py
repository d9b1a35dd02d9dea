"""Class balance for training (``data.balance``): the training split's class counts, and what each policy does.

- ``none``: every training clip once an epoch, in a shuffled order.
- ``sampler``: an epoch draws as many clips as the split has, with replacement, each with probability inversely
  proportional to its class's frequency (``resumable.BalancedSampler``): every class about equally often.
- ``loss``: cross-entropy weights ``N / (C * n_c)`` from the training counts (the classes' mean weight over the
  clips is 1), which the model takes at ``setup`` (``loss_weights``).
"""

from collections import Counter
from collections.abc import Sequence
from typing import Any, Literal

Balance = Literal["none", "sampler", "loss"]
BALANCE: tuple[str, ...] = ("none", "sampler", "loss")


def check_balance(balance: str, streaming: str | None) -> str:
    """``balance``, once it is known to apply to this data."""
    if balance not in BALANCE:
        raise ValueError(f"data.balance must be one of {', '.join(BALANCE)}, got {balance!r}")
    if balance != "none" and streaming:
        raise ValueError(
            f"data.balance: {balance} needs the training annotations' labels, which data.streaming does not read "
            "up front: set data.balance: none, or train from data.train"
        )
    return balance


def index_labels(dataset: Any) -> list[int]:
    """The label of every index of a ``VideoDataset`` or ``FeatureCacheDataset`` (item ``i % n`` when it lists its
    items ``repeats`` times)."""
    if hasattr(dataset, "rows"):  # FeatureCacheDataset: (path, label, entry)
        labels = [row[1] for row in dataset.rows]
    elif hasattr(dataset, "items"):  # VideoDataset: (path, label)
        labels = [label for _, label in dataset.items]
    else:
        raise TypeError(f"data.balance: cannot read the labels of a {type(dataset).__name__}")
    return labels * getattr(dataset, "repeats", 1)


def count_classes(dataset: Any, class_names: Sequence[str], split: str = "train") -> dict[str, int]:
    """Videos per class of ``split`` (in label order, zeros included); a video listed ``repeats`` times counts once."""
    if dataset is None:
        raise ValueError(f"class_counts: no {split!r} split yet (run the data module's setup for its stage first)")
    labels = index_labels(dataset)
    counts = Counter(labels[: len(labels) // getattr(dataset, "repeats", 1)])
    return {name: counts.get(label, 0) for label, name in enumerate(class_names)}


def inverse_frequency(counts: Sequence[int]) -> list[float]:
    """Per-class weights ``N / (C * n_c)`` over the C classes with clips (sklearn's "balanced"): a clip's expected
    weight is 1. A class without training clips gets 1 (it only ever appears in validation)."""
    present = [count for count in counts if count > 0]
    total = sum(present)
    return [total / (len(present) * count) if count > 0 else 1.0 for count in counts]


def loss_weights(datamodule: Any, given: Sequence[float] | None) -> list[float] | None:
    """The cross-entropy weights a model takes from a data module with ``balance: loss`` (None otherwise): inverse
    class frequencies of its training split. ``given``: the model's own ``class_weights``, which must agree."""
    if getattr(datamodule, "balance", "none") != "loss":
        return None
    weights = inverse_frequency(list(datamodule.class_counts("train").values()))
    if given is not None and any(abs(a - b) > 1e-6 * max(a, b) for a, b in zip(given, weights, strict=True)):
        raise ValueError(
            f"model.class_weights {list(given)} and data.balance: loss (weights {weights}) both set the loss weights: "
            "set model.class_weights: null, or data.balance: none"
        )
    return weights


def describe_balance(balance: str, counts: dict[str, int]) -> str:
    """One summary line: the training counts and what ``balance`` made of them."""
    listed = ", ".join(f"{name} {count}" for name, count in counts.items())
    if balance == "sampler":
        return f"class balance: sampler (each class drawn about equally often) over training counts {listed}"
    if balance == "loss":
        weights = inverse_frequency(list(counts.values()))
        listed_weights = ", ".join(f"{name} {w:.2f}" for name, w in zip(counts, weights, strict=True))
        return f"class balance: loss weights {listed_weights} from training counts {listed}"
    return f"class balance: none (training counts {listed})"
