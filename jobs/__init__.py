"""Content x style job manifests in Parquet: build, validate, read. Needs no Ray."""

from jobs.build import BuildResult, build_manifest, parse_param_args, parse_sweep_args, write_manifest
from jobs.coerce import coerce
from jobs.files import check_image, check_images
from jobs.reader import iter_manifest, manifest_fingerprint, manifest_layout
from jobs.row_id import ROW_ID_HEX, ROW_ID_VERSION, params_key, row_id_for
from jobs.schema import (
    OUTPUT_NAME_COLUMN,
    PARAM_COLUMNS,
    PARAM_KINDS,
    REQUIRED_COLUMNS,
    ROW_ID_COLUMN,
    ManifestError,
    ManifestRow,
    RowProblem,
)
from jobs.sources import IMAGE_EXTENSIONS, list_sources
from jobs.summary import DEFAULT_THROUGHPUT, ManifestSummary, summarise_manifest
from jobs.validate import ValidationReport, validate_manifest

__all__ = [
    "DEFAULT_THROUGHPUT",
    "IMAGE_EXTENSIONS",
    "OUTPUT_NAME_COLUMN",
    "PARAM_COLUMNS",
    "PARAM_KINDS",
    "REQUIRED_COLUMNS",
    "ROW_ID_COLUMN",
    "ROW_ID_HEX",
    "ROW_ID_VERSION",
    "BuildResult",
    "ManifestError",
    "ManifestRow",
    "ManifestSummary",
    "RowProblem",
    "ValidationReport",
    "build_manifest",
    "check_image",
    "check_images",
    "coerce",
    "iter_manifest",
    "list_sources",
    "manifest_fingerprint",
    "manifest_layout",
    "params_key",
    "parse_param_args",
    "parse_sweep_args",
    "row_id_for",
    "summarise_manifest",
    "validate_manifest",
    "write_manifest",
]
