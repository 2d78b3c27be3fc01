"""Which loader reads which dataset card."""

from __future__ import annotations

from typing import TYPE_CHECKING

from suite.data.base import VideoTextSplit
from suite.data.cards import DatasetCard
from suite.errors import UserError

if TYPE_CHECKING:
    from suite.job.config import RunConfig

SPLITS = ("train", "val", "test")


def load_split(card: DatasetCard, split: str, config: RunConfig) -> VideoTextSplit:
    """Split ``split`` of the dataset described by ``card``, as ``config`` asks for it."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    frames = config.frames
    merged = {**card.options, **config.data_options}
    if card.loader == "synthetic":
        from suite.data.synthetic import SyntheticConfig, make_split

        known = set(SyntheticConfig.__dataclass_fields__) - {"frames"}
        unknown = sorted(set(merged) - known)
        if unknown:
            raise UserError(f"synthetic has no option {', '.join(unknown)}; "
                            f"valid: {', '.join(sorted(known))}")
        from suite.common.typed import typed

        try:
            options = typed("data.", SyntheticConfig, {"frames": frames, **merged})
        except ValueError as exc:
            raise UserError(f"bad setting {str(exc).replace('data.frames', 'frames')}") from None
        if split == "val" and options.num_val == 0:
            raise UserError("data.num_val is 0: there is no validation split to select on; "
                            "use --select-on last (or test)")
        if split == "train" and options.num_train == 0:  # read only by runs that train
            raise UserError("data.num_train is 0: there is nothing to train on; set it to at "
                            "least the batch size, or --epochs 0 to evaluate only")
        return make_split(options, split)
    from suite.data.real import REAL_LOADERS, load_real_split

    if card.loader in REAL_LOADERS:
        return load_real_split(card, split, config)
    raise UserError(f"dataset {card.name!r} names loader {card.loader!r}, which does not exist")
