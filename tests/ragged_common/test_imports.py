"""ragged_common sits below the four packages: it imports none of them, nor TensorFlow."""

from __future__ import annotations

import subprocess
import sys


def test_ragged_common_imports_no_package_of_the_project_and_no_tensorflow():
    code = (
        "import sys\n"
        "import ragged_common.atomic, ragged_common.bounds, ragged_common.checks, ragged_common.cli\n"
        "import ragged_common.reading\n"
        "heavy = ('tensorflow', 'keras', 'chain', 'chain_app', 'datagen', 'bench')\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] in heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
