"""The README's Python snippets run as written, top to bottom in one process (as a reader would paste them)."""

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_snippets_run(tmp_path):
    blocks = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.M | re.S)
    assert len(blocks) >= 3
    script = tmp_path / "readme.py"
    script.write_text("\n".join(blocks))
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=900,
                          env={"OMP_NUM_THREADS": "1", "PATH": "", "TQDM_DISABLE": "1",
                               "LANDSCAPE_CACHE": os.environ["LANDSCAPE_CACHE"]})  # the session's, not ~/.cache
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "out" / "scan.h5").is_file() and (tmp_path / "paraview" / "scan.vts").is_file()
    assert (tmp_path / "contour.png").is_file() and (tmp_path / "render.png").is_file()
