import json
import subprocess
import sys

import pytest

from contrast_core.__main__ import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "contrast_core", *args], capture_output=True, text=True, timeout=300)


def test_train_json_line_holds_config_timing_and_metrics():
    out = run_cli("train", "--dataset", "digits", "--model", "mlp", "--loss", "contrastive", "--distance", "euclidean",
                  "--margin", "1.0", "--sampler", "random-pairs", "--embedding-dim", "2", "--batch-size", "100",
                  "--steps", "30", "--seed", "0", "--device", "cpu", "--json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    line = json.loads(out.stdout.strip().splitlines()[-1])
    assert line["config"]["steps"] == 30 and line["config"]["margin"] == 1.0
    for key in ("train_seconds", "pairs_per_second", "rand_index", "adjusted_rand", "nmi", "davies_bouldin",
                "silhouette", "knn_accuracy", "precision_at_1", "map_at_r", "linear_probe_accuracy"):  # fmt: skip
        assert isinstance(line[key], float), key
    assert "30/30" in out.stderr  # the progress bar


@pytest.mark.parametrize(
    "args, words",
    [
        (["--margin", "-1"], "--margin: must be >= 0"),
        (["--loss", "triplet"], "--sampler: 'random-pairs' cannot feed"),
        (["--lr", "nan"], "--lr: must be a finite number"),
        (["--batch-size", "one"], "--batch-size:"),
    ],
)
def test_bad_arguments_exit_nonzero_with_one_line(args, words, capsys):
    assert main(["train", "--steps", "1", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err


def test_config_file_with_flag_override(tmp_path, capsys):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"steps": 3, "batch_size": 10, "eval_size": 20, "device": "cpu", "margin": 9}))
    assert main(["train", "--config", str(path), "--margin", "0.5", "--json", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["config"]["margin"] == 0.5


def test_bad_config_file_is_one_line(tmp_path, capsys):
    path = tmp_path / "run.json"
    path.write_text("{not json")
    assert main(["train", "--config", str(path)]) == 2
    assert capsys.readouterr().err.startswith("error: --config:")


def test_unused_knob_is_a_note(capsys):
    assert (
        main(["train", "--steps", "2", "--eval-size", "20", "--temperature", "0.3", "--quiet", "--device", "cpu"]) == 0
    )
    assert "note: temperature is not used" in capsys.readouterr().err


def test_bench_refuses_an_unknown_section_in_one_line(capsys, tmp_path):
    assert main(["bench", "--only", "training,speed", "--out", str(tmp_path / "b.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: --only: unknown section speed")
    assert not (tmp_path / "b.json").exists()


def test_bench_sends_the_dashboard_section_to_the_ui_bench(capsys, tmp_path):
    assert main(["bench", "--only", "dashboard", "--out", str(tmp_path / "b.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: --only: unknown section dashboard")
    assert err.endswith("python -m ui.bench") and not (tmp_path / "b.json").exists()


def test_bench_refuses_cuda_without_a_gpu(capsys, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(["bench", "--device", "cuda", "--out", str(tmp_path / "b.json")]) == 2
    assert capsys.readouterr().err.strip() == "error: --device: cuda was asked for but no CUDA GPU is available"


def test_precision_flag_rejects_an_unknown_value(capsys):
    assert main(["train", "--steps", "1", "--precision", "float16"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: --precision:")


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A store holding one finished run, and its files' bytes: bad commands must leave them as they were."""
    home = tmp_path_factory.mktemp("cli-home")
    assert main(["train", "--steps", "3", "--eval-size", "20", "--device", "cpu", "--quiet", "--home", str(home)]) == 0
    return home, {p: p.read_bytes() for p in (home / "runs").rglob("*") if p.is_file()}


def _weights(tmp_path, kind: str) -> str:
    import torch

    path = tmp_path / f"{kind}.pt"
    if kind == "list":
        torch.save([1, 2], path)
    elif kind == "wrong-keys":
        torch.save({"a": torch.zeros(2)}, path)
    else:
        path.write_text("not a checkpoint")
    return str(path)


@pytest.mark.parametrize(
    "args, code, words",
    [
        (["--device", "cuda"], 2, "error: --device: cuda was asked for but no CUDA GPU is available"),
        (["--device", "mps"], 2, "error: --device: mps was asked for but is not available"),
        (["--margin", "1e308"], 2, "error: --margin: must be at most 10,000"),
        (["--snapshot-every", "1", "--steps", "1000"], 2, "error: --snapshot-every: at least 6 for 1,000 steps"),
        (["--model", "resnet18", "--weights", "/nonexistent.pt"], 1, "error: weights: file not found: /nonexistent.pt"),
        (["--model", "resnet18", "--weights", "list"], 1, "holds a list, not a state dict of tensors"),
        (["--model", "resnet18", "--weights", "wrong-keys"], 1, "does not fit resnet18: 122 missing (e.g. bn1.bias), 1 unknown (e.g. a)"),
        (["--model", "resnet18", "--weights", "junk"], 1, "could not be loaded ("),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_loses_nothing_stored(stored, tmp_path, capsys, args, code, words):
    home, files = stored
    if "--weights" in args and not args[-1].startswith("/"):
        args = [*args[:-1], _weights(tmp_path, args[-1])]
    if not any(a == "--steps" for a in args):
        args = [*args, "--steps", "2"]
    assert main(["train", "--eval-size", "20", "--quiet", "--home", str(home), *args]) == code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err, err
    assert {p: p.read_bytes() for p in files} == files  # the stored run is byte for byte as it was
    from contrast_core.store import RunStore

    assert {run.status for run in RunStore(home).list_runs()} <= {"finished", "failed"}  # none left "running"


def test_an_unusable_home_or_a_deep_config_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["train", "--steps", "1", "--home", str(blocker / "store")]) == 2
    assert (
        capsys.readouterr().err.strip().startswith(f"error: store: cannot use {blocker / 'store'} as the run store (")
    )
    deep = tmp_path / "deep.json"
    deep.write_text('{"steps": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert main(["train", "--config", str(deep)]) == 2
    assert capsys.readouterr().err.strip() == f"error: --config: {deep} is nested too deeply to hold a run's settings"
