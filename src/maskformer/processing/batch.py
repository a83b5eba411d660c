"""``BatchFeature``: the dict the image processor returns (attribute access, ``.to(device)``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

RETURN_TENSOR_TYPES = (None, "np", "pt")


def check_return_tensors(return_tensors: Any) -> str | None:
    """Normalise ``return_tensors`` (None, "np", "pt" or an enum whose value is one of them)."""
    value = getattr(return_tensors, "value", return_tensors)
    if value not in RETURN_TENSOR_TYPES:
        raise ValueError(f"`return_tensors` must be None, 'np' or 'pt', got {return_tensors!r}")
    return value


class BatchFeature(dict):
    """A dict of model inputs with attribute access.

    ``pixel_values`` / ``pixel_mask`` are a list of per-image numpy arrays
    (``return_tensors=None``), a batched numpy array (``"np"``) or a torch tensor (``"pt"``);
    ``mask_labels`` / ``class_labels`` are always lists of torch tensors, as in the reference.
    """

    def __init__(self, data: dict[str, Any] | None = None, tensor_type: Any = None):
        super().__init__(data or {})
        self.convert_to_tensors(tensor_type)

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError as error:
            raise AttributeError(name) from error

    def __getstate__(self) -> dict[str, Any]:
        return dict(self)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.update(state)

    def convert_to_tensors(self, tensor_type: Any = None) -> BatchFeature:
        """Turn list / array values into ``tensor_type`` ("np", "pt"; None leaves them)."""
        tensor_type = check_return_tensors(tensor_type)
        if tensor_type is None:
            return self
        for key, value in self.items():
            if key in ("mask_labels", "class_labels"):
                continue
            if tensor_type == "pt" and not isinstance(value, torch.Tensor):
                array = value if isinstance(value, np.ndarray) else np.stack(value)
                self[key] = torch.from_numpy(np.ascontiguousarray(array))
            elif tensor_type == "np" and not isinstance(value, np.ndarray):
                self[key] = np.stack([np.asarray(v) for v in value])
        return self

    def to(self, *args: Any, **kwargs: Any) -> BatchFeature:
        """Move every tensor (and tensors inside lists) like ``torch.Tensor.to``; floating-point
        dtypes only apply to floating-point tensors."""

        def move(value: Any) -> Any:
            if isinstance(value, torch.Tensor):
                if not value.is_floating_point():
                    dtype_free_args = [a for a in args if not isinstance(a, torch.dtype)]
                    dtype_free_kwargs = {k: v for k, v in kwargs.items() if k != "dtype"}
                    return value.to(*dtype_free_args, **dtype_free_kwargs)
                return value.to(*args, **kwargs)
            if isinstance(value, list):
                return [move(v) for v in value]
            return value

        for key in list(self):
            self[key] = move(self[key])
        return self
