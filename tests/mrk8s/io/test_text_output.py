"""The text output's fast paths against its general path (``json TAB json`` per record).

The oracle is ``json.dumps`` of each key and value, one record at a time.
"""

from __future__ import annotations

import json
import random

import pyarrow as pa
import pytest

from mrk8s.io.outputs import _arrow_text_lines, _text_lines


def expected(keys: list[object], values: list[object]) -> bytes:
    return "".join(
        f"{json.dumps(k, ensure_ascii=False)}\t{json.dumps(v, ensure_ascii=False)}\n"
        for k, v in zip(keys, values, strict=True)
    ).encode()


def random_words(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    alphabet = "abcxyz019 _-é€日本\u2028"
    return ["".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 9))) for _ in range(n)]


def test_records_of_str_keys_and_int_values_match_json_dumps() -> None:
    keys = [*random_words(500, 1), 'quote"', "back\\slash", "tab\t", "nl\n", "\x00"]
    values = [random.Random(2).randrange(-(10**20), 10**20) for _ in keys]
    assert _text_lines(keys, values).encode() == expected(keys, values)
    # Anything else takes the general path, with the same result.
    mixed: list[object] = [1, True, None, 2.5, "s", [1, 2], {"a": 1}]
    assert _text_lines(["k"] * len(mixed), mixed).encode() == expected(["k"] * 7, mixed)


@pytest.mark.parametrize("kind", [pa.string(), pa.large_string()])
def test_an_arrow_word_count_table_becomes_the_same_lines(kind: pa.DataType) -> None:
    keys = random_words(1000, 3)
    counts = list(range(-500, 500))
    table = pa.table({"key": pa.array(keys, kind), "value": pa.array(counts, pa.int32())})
    for piece in (table, table.slice(17, 500), pa.concat_tables([table.slice(0, 3), table])):
        lines = _arrow_text_lines(piece)
        assert lines is not None
        k, v = piece.column(0).to_pylist(), piece.column(1).to_pylist()
        assert bytes(lines) == expected(k, v)


@pytest.mark.parametrize(
    "table",
    [
        pa.table({"key": ['needs "escaping"', "a"], "value": [1, 2]}),
        pa.table({"key": ["ctrl\x01"], "value": [1]}),
        pa.table({"key": ["a"], "value": [1.5]}),
        pa.table({"key": [1], "value": [1]}),
        pa.table({"key": ["a", None], "value": [1, 2]}),
        pa.table({"key": ["a"], "value": [1], "extra": [2]}),
    ],
    ids=["quote", "control", "float", "int-key", "null", "extra-column"],
)
def test_other_tables_are_left_to_the_general_path(table: pa.Table) -> None:
    assert _arrow_text_lines(table) is None
