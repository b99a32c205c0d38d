"""``minires gradflow`` (through minires.commands.gradflow) writes its CSV, Markdown and PNG files."""

import csv

import numpy as np
import pytest

from minires.commands import gradflow as cli


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_gradflow_writes_csv_markdown_and_plots(tmp_path):
    out = tmp_path / "gf"
    status = cli.main(["gradflow", "--model", "plain20", "resnet20", "--batch-size", "4", "--seeds", "1",
                       "--out", str(out)])
    assert status == 0
    rows = _rows(out / "gradnorms.csv")
    assert list(rows[0].keys()) == ["model", "seed", "name", "kind", "depth", "norm"]
    assert {r["model"] for r in rows} == {"plain20", "resnet20"}
    assert {r["kind"] for r in rows} == {"param", "activation"}
    params = [r for r in rows if r["model"] == "resnet20" and r["kind"] == "param"]
    assert params[0]["name"] == "conv1.weight" and len(params) == 20  # 19 convs + fc
    acts = [r for r in rows if r["model"] == "resnet20" and r["kind"] == "activation"]
    assert [int(r["depth"]) for r in acts] == list(range(10))  # 9 block inputs + the last output
    assert all(float(r["norm"]) > 0 for r in rows)
    blocks = _rows(out / "blocks.csv")
    res = [b for b in blocks if b["model"] == "resnet20"]
    assert len(res) == 9 and res[3]["shortcut"] == "A"
    assert max(float(b["identity_error"]) for b in blocks) < 1e-5
    assert all(float(b["norm_skip"]) == 0 for b in blocks if b["model"] == "plain20")
    # the table's skip + branch really is grad_in (norms obey the triangle inequality)
    for b in res:
        assert float(b["norm_grad_in"]) <= float(b["norm_skip"]) + float(b["norm_branch"]) + 1e-6
    assert "| resnet20 |" in (out / "blocks.md").read_text()
    summary = _rows(out / "summary.csv")
    assert len(summary) == 2 and all(np.isfinite(float(r["log10_ratio"])) for r in summary)
    for png in ("gradnorm_depth.png", "gradnorm_params.png", "skip_branch.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 200_000


@pytest.mark.parametrize("argv, message", [
    (["--model", "resnet7"], "unknown model"),
    (["--model", "plain20", "resnet20", "--checkpoint", "x.npz"], "exactly one --model"),
    (["--model", "resnet20", "--batch-size", "1"], "batch-size must be >= 2"),
    (["--model", "resnet20", "--data", "/no/such/dir", "--batch-size", "4"], "--data /no/such/dir"),
])
def test_gradflow_errors(tmp_path, capsys, argv, message):
    assert cli.main(argv + ["--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_minires_cli_has_the_gradflow_subcommand(tmp_path):
    from minires import cli as main_cli

    out = tmp_path / "g"
    assert main_cli.main(["gradflow", "--model", "resnet20", "--batch-size", "4", "--no-plots",
                          "--data", "embedded", "--jacobian-iters", "2", "--jacobian-batch", "2",
                          "--out", str(out)]) == 0
    assert (out / "gradnorms.csv").exists() and (out / "blocks.md").exists()
    jac = _rows(out / "jacobian.csv")
    assert len(jac) == 9 and all(float(r["residual"]) > 0 and float(r["branch"]) > 0 for r in jac)
    assert not (out / "skip_branch.png").exists()


def test_gradflow_analyses_a_checkpoint(tmp_path):
    import minires as mr
    from minires.models import create
    from minires.io import save_state_dict

    mr.manual_seed(123)
    model = create("resnet20")
    for p in model.parameters():  # weights no initialisation seed would give
        p.data[...] = p.data * 0.5
    path = tmp_path / "model.npz"
    save_state_dict(model.state_dict(), str(path))
    runs = {}
    for tag, extra in (("init", []), ("ckpt", ["--checkpoint", str(path)])):
        out = tmp_path / tag
        assert cli.main(["--model", "resnet20", "--batch-size", "4", "--no-plots", "--out", str(out)] + extra) == 0
        runs[tag] = _rows(out / "summary.csv")[0]
    assert runs["init"]["first_norm"] != runs["ckpt"]["first_norm"]
    assert "checkpoint" in (tmp_path / "ckpt" / "summary.md").read_text()
