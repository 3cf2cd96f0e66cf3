import subprocess
import sys

import datapruning


def test_every_public_name_resolves():
    assert set(datapruning.__all__) == {*datapruning._EXPORTS, "__version__"}
    for name in datapruning.__all__:
        assert getattr(datapruning, name) is not None


def test_import_is_light():
    # The CLI imports datapruning for every command; torch must wait until a command needs it.
    code = "import sys, datapruning.cli; print('torch' in sys.modules, 'pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
