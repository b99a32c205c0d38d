"""TrainConfig.normalize: validated, canonical, part of what a resume must match."""

import pytest

from minires.train import TrainConfig
from minires.train.config import RESUME_KEYS


def test_normalize_is_validated_and_canonical():
    assert TrainConfig().normalize == "train"
    assert TrainConfig(normalize=" ImageNet").validate().normalize == "imagenet"
    assert TrainConfig(normalize="0.5,0.5,0.5,0.2,0.2,0.2").validate().normalize == "0.5,0.2"
    with pytest.raises(ValueError, match="normalize must be one of train, cifar, imagenet, none"):
        TrainConfig(normalize="imagenett").validate()
    assert TrainConfig.from_dict({"model": "resnet20"}).normalize == "train"  # configs written before the field
    assert "normalize" in RESUME_KEYS
