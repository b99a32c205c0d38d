"""End to end: a small residual conv net overfits 64 random images (issue #2)."""

import time

import numpy as np

import minires as mr
import minires.functional as F
import minires.nn as nn
from minires.optim import SGD, LRScheduler, create_schedule, param_groups_weight_decay


class ResidualBlock(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()

    def forward(self, x):
        residual_branch = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(residual_branch + x)  # the skip connection


class SmallResNet(nn.Module):
    def __init__(self, num_classes=10, width=16, image_size=12):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.block = ResidualBlock(width)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Sequential(nn.AvgPool2d(2), nn.Flatten(), nn.Linear(width * (image_size // 4) ** 2, num_classes))

    def forward(self, x):
        return self.head(self.pool(self.block(self.stem(x))))


def test_small_residual_net_overfits_64_random_images():
    mr.manual_seed(0)
    rng = np.random.default_rng(0)
    images = mr.tensor(rng.standard_normal((64, 3, 12, 12)).astype(np.float32))
    labels = mr.tensor(rng.integers(0, 10, size=64))
    model = SmallResNet()
    steps = 40
    opt = SGD(param_groups_weight_decay(model, 5e-4), lr=0.05, momentum=0.9, nesterov=True)
    sched = LRScheduler(opt, create_schedule("linear", 0.05, steps, warmup_frac=0.1))
    start = time.perf_counter()
    losses = []
    for _ in range(steps):
        model.train()
        loss = F.cross_entropy(model(images), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    model.eval()
    with mr.no_grad():
        accuracy = float((model(images).numpy().argmax(1) == labels.numpy()).mean())
    seconds = time.perf_counter() - start
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.1 * losses[0], losses
    assert accuracy == 1.0, (accuracy, losses[-5:])  # in eval mode, with the running statistics
    assert seconds < 60, f"took {seconds:.1f} s"  # about 5 s on 2 busy CPU cores


def test_training_steps_match_torch_in_float64():
    import pytest

    torch = pytest.importorskip("torch")

    class TorchBlock(torch.nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv1 = torch.nn.Conv2d(c, c, 3, padding=1, bias=False)
            self.bn1 = torch.nn.BatchNorm2d(c)
            self.conv2 = torch.nn.Conv2d(c, c, 3, padding=1, bias=False)
            self.bn2 = torch.nn.BatchNorm2d(c)
            self.relu = torch.nn.ReLU()

        def forward(self, x):
            return self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))) + x)

    class TorchNet(torch.nn.Module):
        def __init__(self, width=8):
            super().__init__()
            self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, width, 3, padding=1, bias=False),
                                            torch.nn.BatchNorm2d(width), torch.nn.ReLU())
            self.block = TorchBlock(width)
            self.pool = torch.nn.MaxPool2d(2)
            self.head = torch.nn.Sequential(torch.nn.AvgPool2d(2), torch.nn.Flatten(),
                                            torch.nn.Linear(width * 4, 10))

        def forward(self, x):
            return self.head(self.pool(self.block(self.stem(x))))

    rng = np.random.default_rng(1)
    mine, theirs = SmallResNet(width=8, image_size=8).double(), TorchNet().double()
    assert list(mine.state_dict()) == list(theirs.state_dict())
    theirs.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in mine.state_dict().items()})
    steps = 5
    schedule = create_schedule("linear", 0.1, steps, warmup_frac=0.2)
    opt = SGD(param_groups_weight_decay(mine, 5e-4), lr=0.1, momentum=0.9, nesterov=True)
    sched = LRScheduler(opt, schedule)
    decay = [p for p in theirs.parameters() if p.ndim > 1]
    no_decay = [p for p in theirs.parameters() if p.ndim <= 1]
    topt = torch.optim.SGD([{"params": decay, "weight_decay": 5e-4}, {"params": no_decay, "weight_decay": 0.0}],
                           lr=0.1, momentum=0.9, nesterov=True)
    tsched = torch.optim.lr_scheduler.LambdaLR(topt, lambda t: schedule(t) / 0.1)
    for _ in range(steps + 1):
        x = rng.standard_normal((8, 3, 8, 8))
        y = rng.integers(0, 10, size=8)
        loss = F.cross_entropy(mine(mr.tensor(x)), mr.tensor(y))
        tloss = torch.nn.functional.cross_entropy(theirs(torch.from_numpy(x)), torch.from_numpy(y))
        np.testing.assert_allclose(loss.item(), tloss.item(), rtol=1e-10)
        opt.zero_grad()
        topt.zero_grad()
        loss.backward()
        tloss.backward()
        opt.step()
        topt.step()
        sched.step()
        tsched.step()
    expected = theirs.state_dict()
    for name, value in mine.state_dict().items():
        np.testing.assert_allclose(value, expected[name].numpy(), rtol=1e-9, atol=1e-11, err_msg=name)
