"""Arrow columns shared by the codec and partition tests."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def integer_extremes() -> list[pa.Array]:
    """Every signed and unsigned integer width (but uint64), at its limits, with a null."""
    columns = []
    for arrow_type in [pa.int8(), pa.int16(), pa.int32(), pa.int64()]:
        info = np.iinfo(arrow_type.to_pandas_dtype())
        columns.append(pa.array([int(info.min), -1, None, 0, int(info.max)], arrow_type))
    for arrow_type in [pa.uint8(), pa.uint16(), pa.uint32()]:
        info = np.iinfo(arrow_type.to_pandas_dtype())
        columns.append(pa.array([0, None, int(info.max)], arrow_type))
    return columns
