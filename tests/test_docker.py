"""The Dockerfile: built where a Docker daemon answers (skipped elsewhere); its steps are the Makefile's."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_the_image_runs_what_make_run_runs():
    dockerfile, makefile = (ROOT / "Dockerfile").read_text(), (ROOT / "Makefile").read_text()
    assert "pip install -r requirements.txt" in dockerfile and "-r requirements.txt" in makefile
    assert re.search(r'CMD \["streamlit", "run", "app.py"', dockerfile) and "streamlit run app.py" in makefile
    assert "CONTRAST_HOME=/data" in dockerfile and "VOLUME /data" in dockerfile  # runs outlive the container
    assert "/_stcore/health" in dockerfile  # the health check is Streamlit's own


def _daemon() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


@pytest.mark.skipif(not _daemon(), reason="no Docker daemon here")
def test_the_image_builds():
    done = subprocess.run(["docker", "build", "-q", "-t", "contrast-lab-test", str(ROOT)], capture_output=True,
                          text=True, timeout=1800)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
