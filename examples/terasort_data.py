"""Generate TeraSort input and validate TeraSort output.

    python examples/terasort_data.py gen ROWS DIR [--files N] [--seed S]
    python examples/terasort_data.py validate INPUT_DIR OUTPUT_DIR

``gen`` writes Parquet files of records with a 10-byte random binary ``key``
and a 90-byte ``value`` (100 bytes a record, as TeraGen). ``validate`` checks
that the output parts, concatenated in order, are sorted by key, and that
they hold exactly the input's records (same count, same order-independent
checksum); it prints a JSON verdict and exits 1 if anything is wrong.
"""

import argparse
import glob
import itertools
import json
import os
import sys
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

KEY_BYTES = 10
VALUE_BYTES = 90


def generate(rows: int, directory: str, files: int = 4, seed: int = 0) -> None:
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(seed)
    per_file = -(-rows // files)
    for f in range(files):
        n = max(0, min(per_file, rows - f * per_file))
        keys = rng.integers(0, 256, size=(n, KEY_BYTES), dtype=np.uint8)
        values = rng.integers(32, 127, size=(n, VALUE_BYTES), dtype=np.uint8)
        table = pa.table(
            {
                "key": pa.array([k.tobytes() for k in keys], pa.binary()),
                "value": pa.array([v.tobytes() for v in values], pa.binary()),
            }
        )
        pq.write_table(
            table, os.path.join(directory, f"part-{f:05d}.parquet"), row_group_size=20_000
        )


def _checksum(table: pa.Table) -> tuple[int, int]:
    """(rows, sum of per-record crc32 mod 2**64): independent of record order."""
    total = 0
    for k, v in zip(table["key"].to_pylist(), table["value"].to_pylist(), strict=True):
        total += zlib.crc32(k + v)
    return table.num_rows, total % 2**64


def validate(input_dir: str, output_dir: str) -> dict:
    inputs = pq.read_table(sorted(glob.glob(os.path.join(input_dir, "*.parquet"))))
    parts = sorted(glob.glob(os.path.join(output_dir, "part-*")))
    output = pa.concat_tables([pq.read_table(p) for p in parts]) if parts else inputs.slice(0, 0)
    keys = output["key"].to_pylist()
    unsorted = sum(1 for a, b in itertools.pairwise(keys) if a > b)
    in_rows, in_sum = _checksum(inputs)
    out_rows, out_sum = _checksum(output)
    return {
        "ok": unsorted == 0 and (in_rows, in_sum) == (out_rows, out_sum),
        "rows_in": in_rows,
        "rows_out": out_rows,
        "out_of_order_pairs": unsorted,
        "checksum_match": in_sum == out_sum,
        "parts": len(parts),
    }


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("gen")
    g.add_argument("rows", type=int)
    g.add_argument("directory")
    g.add_argument("--files", type=int, default=4)
    g.add_argument("--seed", type=int, default=0)
    v = sub.add_parser("validate")
    v.add_argument("input_dir")
    v.add_argument("output_dir")
    args = p.parse_args(argv)
    if args.command == "gen":
        generate(args.rows, args.directory, args.files, args.seed)
        return 0
    verdict = validate(args.input_dir, args.output_dir)
    print(json.dumps(verdict))
    return 0 if verdict["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
