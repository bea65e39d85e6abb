"""Rebuild the bundled demo model (edgead/demo_model) from generated synthetic washers.

    python -m edgead_export.make_demo
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from edgead.demo import DEMO_MODEL, DEMO_SIZE
from edgead.synthetic import write_dataset
from edgead_export.pipeline import ExportConfig, export_model


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        data = write_dataset(Path(tmp) / "washer", n_train=60, n_test_good=0, n_test_bad=0, size=DEMO_SIZE, seed=42)
        cfg = ExportConfig(data=data, out=DEMO_MODEL, name="demo-washer", coreset=0.1, progress=False,
                           input_size=(DEMO_SIZE, DEMO_SIZE))
        out, manifest = export_model(cfg)
    print(f"demo model written to {out} (bank {manifest['bank_size']}, threshold {manifest['threshold']:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
