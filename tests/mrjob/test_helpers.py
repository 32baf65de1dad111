"""mrjob's helper modules that jobs import (``mrjob.py2``, ``mrjob.util``), and the
refusal of what mrk8s does not provide.

The helpers are compared with the real mrjob's (loaded in this process as the
oracle). Refusals run through ``mrk8s run`` in a process of their own: one
paragraph naming the import and the alternative, exit 2, and no frame of
mrk8s's own code.
"""

from __future__ import annotations

import inspect
import types
from datetime import timedelta
from pathlib import Path

import pytest

from mrk8s.mrjob import py2 as our_py2
from mrk8s.mrjob import util as our_util
from tests.mrjob.conftest import run_cli

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _public(module: types.ModuleType) -> set[str]:
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }


def test_py2_provides_every_name_of_mrjobs() -> None:
    import mrjob.py2

    real = _public(mrjob.py2) - {"print_function"}
    assert real <= _public(our_py2)
    for name in real - {"to_unicode"}:
        assert getattr(our_py2, name) == getattr(mrjob.py2, name), name


@pytest.mark.parametrize("value", [b"caf\xc3\xa9", b"caf\xe9", "déjà", b""])
def test_to_unicode(value: bytes | str) -> None:
    import mrjob.py2

    assert our_py2.to_unicode(value) == mrjob.py2.to_unicode(value)


def test_to_unicode_refuses_other_types_as_mrjob() -> None:
    import mrjob.py2

    with pytest.raises(TypeError):
        mrjob.py2.to_unicode(3)
    with pytest.raises(TypeError):
        our_py2.to_unicode(3)  # type: ignore[arg-type]


def test_util_provides_or_refuses_every_function_of_mrjobs() -> None:
    import mrjob.util

    real = {
        name
        for name, value in vars(mrjob.util).items()
        if not name.startswith("_")
        and (inspect.isfunction(value) or inspect.isclass(value))
        and getattr(value, "__module__", "") == "mrjob.util"
    }
    provided = set(our_util.__all__)
    assert real == provided | set(our_util.NOT_PROVIDED)
    assert not provided & set(our_util.NOT_PROVIDED)


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("cmd_line", (["sh", "-c", "grep -e 'a b' || RC=$?"],)),
        ("cmd_line", ([1, "x y", "", "$HOME", "it's"],)),
        ("file_ext", ("foo.tar.gz",)),
        ("file_ext", (".emacs",)),
        ("file_ext", (".mrjob.conf",)),
        ("file_ext", ("noext",)),
        ("file_ext", ("doc1-cat_a-not_cat_b.txt",)),
        ("shlex_split", ("grep -e 'a b' \"c d\"",)),
        ("expand_path", (None,)),
        ("expand_path", ("~/x/$NO_SUCH_VARIABLE_H2",)),
        ("safeeval", ("set([1, 2]), range(3), None",)),
        ("strip_microseconds", (timedelta(days=1, seconds=5, microseconds=7),)),
        ("which", ("sh",)),
    ],
)
def test_util_functions_as_mrjobs(name: str, args: tuple[object, ...]) -> None:
    import mrjob.util

    assert getattr(our_util, name)(*args) == getattr(mrjob.util, name)(*args)


@pytest.mark.parametrize(
    "chunks",
    [
        [b"a\nb", b"c\n", b"", b"d", b"", b"e\nf"],
        [b"one line without newline"],
        [b"\n\n", b"x\n"],
        [],
    ],
)
def test_to_lines_and_unique_as_mrjobs(chunks: list[bytes]) -> None:
    import mrjob.util

    assert list(our_util.to_lines(iter(chunks))) == list(mrjob.util.to_lines(iter(chunks)))
    items = [3, 1, 3, 2, 1, 5]
    assert list(our_util.unique(items)) == list(mrjob.util.unique(items))


def test_safeeval_has_no_builtins() -> None:
    with pytest.raises(NameError):
        our_util.safeeval("open('/etc/passwd')")
    assert our_util.safeeval("x + 1", {"x": 2}) == 3


def test_random_identifier_and_context_managers(tmp_path: Path) -> None:
    ident = our_util.random_identifier()
    assert len(ident) == 16 and int(ident, 16) >= 0
    with our_util.save_cwd():
        import os

        os.chdir(tmp_path)
    assert os.getcwd() != str(tmp_path)


# -- through the command line --------------------------------------------------------

JOB = """\
{imports}
from mrjob.job import MRJob


class MRCount(MRJob):
    def mapper(self, _, line):
{body}        yield "lines", 1

    def reducer(self, key, ones):
        yield key, sum(ones)
"""


def _run(tmp_path: Path, imports: str, body: str = "") -> tuple[int, str, str]:
    (tmp_path / "mr_count.py").write_text(JOB.format(imports=imports, body=body))
    (tmp_path / "in.txt").write_text("a\nb\nc\n")
    proc = run_cli(
        ["run", "mr_count.py", "in.txt", "-w", "1"], cwd=tmp_path, shuffle_dir=tmp_path / "s"
    )
    return proc.returncode, proc.stdout, proc.stderr


def _no_mrk8s_frame(stderr: str) -> None:
    assert "mrk8s/" not in stderr.replace("mrk8s/mrjob compatibility", "")
    for name in ("aliases", "loader.py", "util.py", "tasks.py", "mrk8s.mrjob.util"):
        assert name not in stderr


@pytest.mark.timeout(120)
def test_helpers_import_in_an_unedited_job(tmp_path: Path) -> None:
    imports = (
        "from mrjob.py2 import to_unicode, urlparse, string_types\n"
        "from mrjob.util import cmd_line, file_ext, to_lines, unique\n"
    )
    body = "        assert to_unicode(line.encode()) == line and file_ext('a.b.c') == '.b.c'\n"
    code, out, err = _run(tmp_path, imports, body)
    assert code == 0, err
    assert out == '"lines"\t3\n'


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("imports", "names"),
    [
        ("from mrjob.emr import EMRJobRunner", ["import of mrjob.emr", "s3://", "mrk8s run"]),
        ("import mrjob.fs.local", ["import of mrjob.fs", "fsspec"]),
        ("from mrjob.conf import combine_dicts", ["import of mrjob.conf", "no mrjob.conf"]),
        ("from mrjob.util import zip_dir", ["mrjob.util.zip_dir", "shutil.make_archive"]),
    ],
)
def test_import_not_provided_is_one_paragraph(
    tmp_path: Path, imports: str, names: list[str]
) -> None:
    code, _, err = _run(tmp_path, imports)
    assert code == 2, err
    error = [line for line in err.splitlines() if line.startswith("mrk8s: error:")]
    assert len(error) == 1, err
    assert f"{tmp_path / 'mr_count.py'}, line 1: " in error[0]
    for name in names:
        assert name in error[0]
    assert "Traceback" not in err
    _no_mrk8s_frame(err)


@pytest.mark.timeout(120)
def test_import_not_provided_inside_a_mapper_shows_only_the_users_frame(tmp_path: Path) -> None:
    body = "        from mrjob.cat import decompress\n"
    code, _, err = _run(tmp_path, "", body)
    assert code == 2, err
    assert "ModuleNotFoundError: import of mrjob.cat" in err and "fsspec.open" in err
    assert f'File "{tmp_path / "mr_count.py"}", line 7, in mapper' in err
    _no_mrk8s_frame(err)
