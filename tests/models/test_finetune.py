"""Transfer learning: a new head trained on a frozen backbone leaves the backbone untouched."""

import numpy as np

import minires as mr
import minires.functional as F
import minires.models as models
from minires import nn
from minires.optim import SGD


def _snapshot(module):
    return {k: np.array(v, copy=True) for k, v in module.state_dict().items()}


def test_frozen_backbone_new_head_fine_tune(rng):
    model = models.resnet20(num_classes=10)
    with mr.no_grad():  # give the BN statistics non-trivial values first ("pretrained")
        for _ in range(10):
            model(mr.tensor(rng.standard_normal((8, 3, 8, 8)).astype(np.float32)))
    model.requires_grad_(False)
    model.fc = nn.Linear(model.num_features, 3)  # new head, trainable by default
    backbone = {k: v for k, v in _snapshot(model).items() if not k.startswith("fc.")}
    assert backbone["bn1.num_batches_tracked"] == 10
    head_before = model.fc.weight.numpy().copy()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable == [model.fc.weight, model.fc.bias]
    optimizer = SGD(trainable, lr=0.02, momentum=0.9)

    model.eval()  # frozen BN: use and keep the running statistics
    x = mr.tensor(rng.standard_normal((12, 3, 16, 16)).astype(np.float32))
    y = mr.tensor(np.arange(12) % 3)
    losses = []
    for _ in range(15):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())

    assert losses[-1] < 0.75 * losses[0]
    assert not np.array_equal(model.fc.weight.numpy(), head_before)
    after = _snapshot(model)
    for name, value in backbone.items():  # weights, running stats, num_batches_tracked
        np.testing.assert_array_equal(after[name], value, err_msg=name)
    assert all(p.grad is None for n, p in model.named_parameters() if not n.startswith("fc."))


def test_train_mode_would_move_the_statistics(rng):
    """The check above can fail: in train mode a frozen backbone's BN statistics still move."""
    model = models.resnet20()
    model.requires_grad_(False)
    before = model.layer1[0].bn1.running_mean.numpy().copy()
    model.train()
    model(mr.tensor(rng.standard_normal((4, 3, 8, 8)).astype(np.float32)))
    assert not np.array_equal(model.layer1[0].bn1.running_mean.numpy(), before)


def test_stage_features_for_a_detection_style_backbone(rng):
    backbone = models.resnet18().eval()
    with mr.no_grad():
        stages = backbone.forward_stages(mr.tensor(rng.standard_normal((1, 3, 64, 64)).astype(np.float32)))
    pyramid = [stages[k] for k in ("layer2", "layer3", "layer4")]
    assert [p.shape for p in pyramid] == [(1, 128, 8, 8), (1, 256, 4, 4), (1, 512, 2, 2)]
    assert backbone.stage_channels == [64, 128, 256, 512]
