"""The wheel carries the viewer's page: built the way an installer builds it (pip and the
project's build backend), its static files are in it byte for byte, and the page is built from
them where the wheel is unpacked (no source tree, no build step)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from helmet_otel.ui.assets import STATIC_FILES
from tests.e2e.helpers import REPO_ROOT, clean_env

STATIC = REPO_ROOT / "helmet_otel" / "ui" / "static"


def test_the_wheel_holds_the_page_and_the_page_builds_from_it(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(tmp_path / "dist"), str(REPO_ROOT)],
        capture_output=True, text=True, env=clean_env(), timeout=120,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("helmet_otel-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for name in STATIC_FILES:
            assert archive.read(f"helmet_otel/ui/static/{name}") == (STATIC / name).read_bytes()
        assert sorted(n for n in names if n.startswith("helmet_otel/ui/static/")) == sorted(
            f"helmet_otel/ui/static/{p.name}" for p in STATIC.iterdir() if p.is_file()
        )
        assert not [n for n in names if "__pycache__" in n or n.startswith("tests/")]
        archive.extractall(tmp_path / "site")
    probe = (
        "import helmet_otel.ui.assets as a, pathlib, sys;"
        "assert pathlib.Path(a.__file__).is_relative_to(sys.argv[1]), a.__file__;"
        "s = a.build_shell({});"
        "sys.stdout.write(str(len(s.body)) + ' ' + s.csp.decode().split('; ')[1])"
    )
    shown = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path / "site")], capture_output=True,
        text=True, env=clean_env({"PYTHONPATH": str(tmp_path / "site")}), cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    size, script_src = shown.stdout.split(" ", 1)
    assert int(size) > sum((STATIC / n).stat().st_size for n in STATIC_FILES) - 200
    assert script_src.startswith("script-src 'sha256-") and script_src.count("sha256-") == 2
