"""The test splits' sizes, class counts and labels, for checking records against the dataset.

A record states each sample's dataset index and label; validation checks that the indices are
distinct and inside the split and, where the split is on this machine, that every label is the
dataset's. The toy split is always here (scikit-learn ships it) and its label vector is pinned by
SHA-256, so a changed scikit-learn release cannot silently re-label it. CIFAR labels are checked
when the torchvision copy is in the data cache (torchvision verifies its files' MD5 before reading);
otherwise validation says they were not checked.
"""

from __future__ import annotations

import functools
import hashlib
import logging

import numpy as np

from bench.core.errors import BenchError

log = logging.getLogger(__name__)

SPLIT_SIZES = {"toy": 600, "cifar10": 10_000, "cifar100": 10_000, "tinyimagenet": 10_000}
NUM_CLASSES = {"toy": 10, "cifar10": 10, "cifar100": 100, "tinyimagenet": 200}
# SHA-256 of the test split's labels as little-endian int64 (toy: scikit-learn digits 1197..1796)
LABEL_SHA256 = {"toy": "56706dd523841acbc0f4c70ca8fedaf9ac276ecca0cbd472c56cee59fd5f10a3"}


class LabelDigestError(BenchError):
    """The local copy of a split does not have the pinned labels."""


@functools.lru_cache(maxsize=4)
def test_labels(dataset: str) -> np.ndarray | None:
    """The split's labels (read-only int64 array), or None when the split is not on this machine
    (never downloads). Raises :class:`LabelDigestError` when a pinned digest does not match."""
    from bench.zoo.datasets import data_dir, load_test_split

    if dataset in ("cifar10", "cifar100"):
        folder = "cifar-10-batches-py" if dataset == "cifar10" else "cifar-100-python"
        if not (data_dir() / folder).is_dir():
            return None
    if dataset == "tinyimagenet":
        from bench.zoo.tinyimagenet import OFFICIAL

        if not (data_dir() / OFFICIAL.filename).exists():
            return None
    try:
        labels = load_test_split(dataset).labels.numpy().astype("<i8")
    except Exception as err:  # a cached copy that torchvision refuses
        log.warning("labels of %s not readable here: %s", dataset, err)
        return None
    expected = LABEL_SHA256.get(dataset)
    digest = hashlib.sha256(labels.tobytes()).hexdigest()
    if expected and digest != expected:
        raise LabelDigestError(f"the local {dataset} test split has labels with SHA-256 {digest}, not the pinned "
                               f"{expected}: the dataset changed (e.g. another scikit-learn release)")
    labels.setflags(write=False)
    return labels


def index_problems(dataset: str, indices: list[int]) -> list[str]:
    """Repeated or out-of-range sample indices."""
    size = SPLIT_SIZES.get(dataset)
    problems = []
    seen: set[int] = set()
    repeated = [] if len(set(indices)) == len(indices) else sorted(
        {i for i in indices if i in seen or seen.add(i)})  # type: ignore[func-returns-value]
    if repeated:
        problems.append(f"dataset.sample_indices: repeated indices {repeated[:10]}")
    if size is not None and indices and not (min(indices) >= 0 and max(indices) < size):
        outside = sorted({i for i in indices if not 0 <= i < size})
        if outside:
            problems.append(f"dataset.sample_indices: {outside[:10]} outside the {dataset} test split (valid: 0..{size - 1})")
    return problems


def label_problems(dataset: str, indices: list[int], labels: list[int]) -> tuple[list[str], bool]:
    """(problems, checked): labels that are not the dataset's at their index; ``checked`` is False
    when the split is not on this machine. Labels outside the dataset's classes are the record's
    shape check's (:meth:`bench.publish.records.Record.check_shapes`, which runs first)."""
    truth = test_labels(dataset)
    if truth is None:
        return [], False
    problems = []
    if indices and min(indices) >= 0 and max(indices) < len(truth) and len(labels) == len(indices):
        # one array comparison (a site build checks every toy record's labels)
        differ = np.flatnonzero(truth[np.asarray(indices)] != np.asarray(labels))
        wrong = [(indices[j], labels[j], int(truth[indices[j]])) for j in differ]
    else:
        wrong = [(i, label, int(truth[i])) for i, label in zip(indices, labels)
                 if 0 <= i < len(truth) and truth[i] != label]
    if wrong:
        shown = ", ".join(f"index {i}: {label} (dataset: {t})" for i, label, t in wrong[:5])
        problems.append(f"samples.label: {len(wrong)} label(s) differ from the {dataset} test split: {shown}")
    return problems, True
