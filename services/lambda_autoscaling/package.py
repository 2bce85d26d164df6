"""Build the autoscaler's Lambda zip, byte for byte the same from the same sources.

The zip keeps the package layout, so the handler is
``services.lambda_autoscaling.handler.handler`` and its imports of
``services.shared`` resolve inside the zip. Only the standard library and
boto3 (which the Lambda runtime provides) may be imported beyond it.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

logger = logging.getLogger(__name__)

HANDLER = "services.lambda_autoscaling.handler.handler"
ZIP_NAME = "lambda_autoscaling.zip"
REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
SHARED_MODULES = (
    "services/__init__.py",
    "services/shared/__init__.py",
    "services/shared/config.py",
    "services/shared/queue_metrics.py",
    "services/shared/rabbit_depth.py",
)
# The earliest moment a zip can hold: fixed, so that equal sources give equal zips.
FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def sources(root: Path = REPOSITORY_ROOT) -> list[str]:
    """The zip's members, as paths relative to the repository root, sorted."""
    package = (root / "services" / "lambda_autoscaling").glob("*.py")
    return sorted({*SHARED_MODULES, *(p.relative_to(root).as_posix() for p in package)})


def package_lambda(dest: Path, root: Path = REPOSITORY_ROOT) -> Path:
    """Write the zip into directory ``dest`` (or to ``dest`` if it ends .zip)."""
    target = dest if dest.suffix == ".zip" else dest / ZIP_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for member in sources(root):
            info = zipfile.ZipInfo(member, date_time=FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, (root / member).read_bytes())
    logger.info("lambda zip %s (%d bytes)", target, target.stat().st_size)
    return target
