"""``rareseg.callbacks`` needs only lightning, torch and torchmetrics; rasterio and matplotlib load where used."""

from __future__ import annotations

import subprocess
import sys

#: Runs the issue's check with rasterio and matplotlib uninstalled as far as Python can tell: their
#: imports fail and their package metadata is missing (torchmetrics imports matplotlib whenever its
#: metadata is there, so in the full environment the check would test torchmetrics, not rareseg).
WITHOUT_RASTERIO_AND_MATPLOTLIB = """
import importlib.abc, importlib.metadata, sys

HIDDEN = ("rasterio", "matplotlib")


class Uninstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HIDDEN:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, Uninstalled())
installed_version = importlib.metadata.version


def version(name):
    if name in HIDDEN:
        raise importlib.metadata.PackageNotFoundError(name)
    return installed_version(name)


importlib.metadata.version = version
import rareseg.callbacks, sys; assert 'rasterio' not in sys.modules and 'matplotlib' not in sys.modules
from rareseg.callbacks import Babysitter, NonFiniteGuard, RareClassMetrics, SaliencyRefresh, ThresholdCalibrator
print(sorted(m for m in sys.modules if m.startswith("rareseg")))
"""


def test_callbacks_import_without_rasterio_and_matplotlib() -> None:
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_RASTERIO_AND_MATPLOTLIB], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = eval(done.stdout.strip().splitlines()[-1])  # noqa: S307 - the list the child printed
    assert "rareseg.core.plots" not in loaded  # matplotlib's figures load when a figure is drawn
    assert not [m for m in loaded if m.startswith(("rareseg.inference", "rareseg.datamodules"))]


def test_callbacks_do_not_load_rasterio_or_rareseg_plots_in_the_full_environment() -> None:
    check = "import rareseg.callbacks, sys; assert not {'rasterio', 'rareseg.core.plots'} & set(sys.modules)"
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
