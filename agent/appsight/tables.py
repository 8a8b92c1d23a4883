"""Feature tables on disk: CSV or Parquet, chosen by the file name, written block by block.

Rows are written as blocks of flows arrive, so memory stays bounded by one block however
long the capture; an interrupted run leaves a valid file holding every flow finished so far.
The file is written beside the target under another name (:class:`~appsight.outputs.AtomicFile`)
and takes the target's place when it is closed, so a run that reads nothing leaves an
existing file untouched.
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path
from typing import IO

import numpy as np

from .errors import UsageError
from .outputs import AtomicFile

ID_COLUMNS = (
    "capture", "burst", "proto", "src", "sport", "dst", "dport", "first_ts", "last_ts",
    "packets_fwd", "packets_bwd", "bytes_fwd", "bytes_bwd",
)


class FeatureTableWriter:
    """Writes identifying columns plus feature columns to ``.csv`` (or ``-``) or ``.parquet``."""

    def __init__(self, path: str, feature_columns: tuple[str, ...]) -> None:
        self.path = path
        self.columns = (*ID_COLUMNS, *feature_columns)
        self.rows = 0
        suffix = Path(path).suffix.lower()
        self._parquet = None
        self._csv_file: IO[str] | None = None
        self._output: AtomicFile | None = None
        if suffix == ".parquet":
            try:
                import pyarrow as pa
                import pyarrow.parquet as pq
            except ImportError:
                raise UsageError(
                    "writing Parquet needs pyarrow: pip install 'appsight[parquet]'"
                ) from None
            self._pa = pa
            schema = pa.schema(
                [(c, pa.string()) if c in ("capture", "proto", "src", "dst") else
                 (c, pa.float64()) if c in ("first_ts", "last_ts") else (c, pa.int64())
                 for c in ID_COLUMNS] + [(c, pa.float64()) for c in feature_columns]
            )
            self._schema = schema
            self._output = AtomicFile(path, binary=True)
            try:
                self._parquet = pq.ParquetWriter(self._output.handle, schema)
            except OSError as exc:
                self._output.abort()
                raise UsageError(f"{path}: cannot write: {exc}") from None
        elif suffix in (".csv", "") or path == "-":
            if path == "-":
                self._csv_file = sys.stdout
            else:
                self._output = AtomicFile(path)
                self._csv_file = self._output.handle
            self._csv = csv.writer(self._csv_file)
            self._csv.writerow(self.columns)
        else:
            raise UsageError(f"{path}: the file name must end in .csv or .parquet")

    def write(self, records: list[dict[str, object]], features: np.ndarray) -> None:
        """Append one block: identifying records and the matching feature matrix."""
        if not records:
            return
        self.rows += len(records)
        if self._parquet is not None:
            data = {c: [r[c] for r in records] for c in ID_COLUMNS}
            for j, name in enumerate(self.columns[len(ID_COLUMNS):]):
                data[name] = features[:, j]
            self._parquet.write_table(self._pa.table(data, schema=self._schema))
            return
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        # Python floats print in their shortest exact form; csv formats them in C.
        for record, row in zip(records, features.tolist(), strict=True):
            writer.writerow([record[c] for c in ID_COLUMNS] + row)
        assert self._csv_file is not None
        self._csv_file.write(buffer.getvalue())

    def close(self, keep: bool = True) -> None:
        """Finish the file and put it in place, or with ``keep`` False (nothing could be
        read) delete it and leave whatever file was there before."""
        if self._parquet is not None:
            self._parquet.close()
        if self._output is None:
            sys.stdout.flush()
        elif keep:
            self._output.commit()
        else:
            self._output.abort()
