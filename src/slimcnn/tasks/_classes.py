"""Do a data set's class folders fit a classifier's outputs? Label ``i`` of the data is scored against output ``i``,
so a count or an order that differs would score a model on the wrong labels without a word."""

from __future__ import annotations

from slimcnn.data.classification import class_key, known_class_names
from slimcnn.errors import DataError


def _show(names: tuple[str, ...], k: int = 6) -> str:
    return ", ".join(names[:k]) + (f", ... ({len(names)} in all)" if len(names) > k else "")


def check_classes(found: tuple[str, ...], dataset: str, n_outputs: int, model_classes: tuple[str, ...] | None) -> None:
    """Refuse data whose classes cannot be the model's outputs.

    Refused: a class count other than the model's output count; class names that are the model's
    (``model_classes``, else a known set: CIFAR-10, ImageNet-1k) at other positions (another order or
    a subset), since label ``i`` of the data is scored against output ``i``. Names the model does not
    know (``0``..``9``, the user's own) are accepted when the count matches.

    Raises:
        DataError: one line saying what was found and what the model expects.
    """
    expected = model_classes if model_classes is not None and len(model_classes) == n_outputs else None
    expected = expected or known_class_names(n_outputs, found)
    what = f" ({_show(expected)})" if expected else ""
    if len(found) == 1:  # a one-output softmax is always right: 100 % top-1 after 3 steps, at loss 0
        want = f"the model's {n_outputs} class folders" if n_outputs > 1 else "2 or more class folders"
        raise DataError(f"{dataset} holds one class folder ({found[0]}): a classifier is trained and scored on at "
                        f"least 2; pass --data with {want}")
    if len(found) != n_outputs:
        raise DataError(
            f"{dataset} holds {len(found)} classes ({_show(found)}) but the model outputs {n_outputs} classes{what}; "
            f"pass --data with the model's {n_outputs} class folders, or train one for these with "
            f"`slimcnn train ... --num-classes {len(found)}`"
        )
    if expected is None:
        return
    position = {class_key(c): i for i, c in enumerate(expected)}
    misplaced = [c for i, c in enumerate(found) if position.get(class_key(c), i) != i]
    if misplaced:
        raise DataError(
            f"the class folders of {dataset} ({_show(found)}) are not the model's classes in its order "
            f"({_show(expected)}): '{misplaced[0]}' is output {position[class_key(misplaced[0])]} but label "
            f"{found.index(misplaced[0])} here; pass --data with exactly the model's classes"
        )
