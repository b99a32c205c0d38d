"""`minires plot` on the files of short runs: the PNGs, several runs, clear errors."""

import sys

import pytest

from minires.cli import main
from minires.train import TrainConfig, Trainer
from minires.train.plot import load_run, plot_curves

from .tiny import tiny_model, tiny_residual_model

pytest.importorskip("matplotlib")

PNG = b"\x89PNG\r\n\x1a\n"
FIGURES = ["learning_curves.png", "branch_skip_ratio.png", "grad_norms.png", "update_ratios.png"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two short tracked runs (a tiny ResNet and a block-free net) and an untracked one."""
    import minires.train.trainer as trainer

    root = tmp_path_factory.mktemp("runs")
    original = trainer.build_model
    try:
        for name, build, every in (("resnet", tiny_residual_model, 1), ("noblocks", tiny_model, 2),
                                   ("untracked", tiny_residual_model, 0)):
            trainer.build_model = build
            Trainer(TrainConfig(model="resnet20", data="embedded", train_subset=64, test_subset=32, epochs=2,
                                batch_size=32, out=str(root / name), progress=False, plot=False,
                                track_gradients=every), log=lambda *a: None).fit()
    finally:
        trainer.build_model = original
    return root


def _assert_pngs(folder, names):
    for name in names:
        data = (folder / name).read_bytes()
        assert data[:8] == PNG and len(data) > 2000, name


def test_plot_one_run_writes_every_figure_into_the_run_folder(runs, capsys):
    assert main(["plot", str(runs / "resnet")]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(runs / "resnet" / name) for name in FIGURES]
    _assert_pngs(runs / "resnet", FIGURES)


def test_plot_several_runs_with_labels(runs, tmp_path, capsys):
    out = tmp_path / "figs"
    args = ["plot", str(runs / "resnet"), str(runs / "noblocks"), str(runs / "untracked"), "--out", str(out),
            "--labels", "ResNet", "no blocks", "untracked"]
    assert main(args) == 0
    _assert_pngs(out, FIGURES)
    assert main(["plot", str(runs / "untracked"), "--out", str(tmp_path / "u")]) == 0
    assert "train with --track-gradients N" in capsys.readouterr().out
    _assert_pngs(tmp_path / "u", ["learning_curves.png"])
    assert not (tmp_path / "u" / "grad_norms.png").exists()


def test_plot_reads_a_run_whose_last_line_is_still_being_written(runs, tmp_path):
    import shutil

    copy = tmp_path / "live"
    shutil.copytree(runs / "resnet", copy)
    with open(copy / "gradients.jsonl", "a") as f:
        f.write('{"step": 99, "blocks": [{"na')
    with pytest.warns(UserWarning, match="gradients.jsonl: left out a torn last line"):
        assert len(load_run(str(copy)).gradients) == 4  # 2 epochs x 2 steps, the torn line left out
    with pytest.warns(UserWarning, match="torn last line"):
        assert main(["plot", str(copy)]) == 0


def test_clear_errors(runs, tmp_path, capsys, monkeypatch):
    assert main(["plot", str(tmp_path / "nowhere")]) == 2
    assert "nowhere: no such run folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["plot", str(tmp_path / "empty")]) == 2
    assert "no records in metrics.jsonl or gradients.jsonl" in capsys.readouterr().err
    assert main(["plot", str(runs / "resnet"), "--labels", "a", "b"]) == 2
    assert "--labels: got 2 labels for 1 runs" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    assert main(["plot", str(runs / "resnet")]) == 2
    assert "minires plot needs matplotlib: pip install 'minires[plot]'" in capsys.readouterr().err
    assert plot_curves([{"epoch": 1}], str(tmp_path / "c.png")) is None  # the trainer's curves stay optional
