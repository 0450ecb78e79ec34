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
