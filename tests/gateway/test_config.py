"""The gateway's config: defaults of the minimal contract, and clear errors for bad files."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from mrk8s.errors import UsageError
from mrk8s.gateway import config


def test_no_config_is_sqlite_in_the_state_dir_one_queue_and_no_auth(tmp_path):
    c = config.load(None, state_dir=str(tmp_path / "s"), environ={})
    assert c.state_dir == tmp_path / "s"
    assert c.database == f"sqlite:///{tmp_path / 's' / 'gateway.db'}"
    assert [q.name for q in c.queues] == ["default"] and c.default_queue == "default"
    assert not c.auth_enabled


def test_the_environment_token_is_an_admin(tmp_path):
    c = config.load(None, state_dir=str(tmp_path), environ={"MRK8S_GATEWAY_TOKEN": "t"})
    assert c.users == (config.User(name="admin", token="t", admin=True),)
    assert c.auth_enabled


def test_a_full_config_is_read(tmp_path):
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "state_dir: st\n"
        "database: postgresql://gw@db/gw\n"
        "users:\n"
        "  - {name: alice, token: a}\n"
        "  - {name: bob, password: b, admin: true}\n"
        "queues:\n"
        "  small: {max_running: 1, max_workers: 2, default_workers: 1}\n"
        "  big: {max_running: 3}\n"
        "default_queue: small\n"
        "artifacts: {max_bytes: 1KiB}\n"
        "allow_local_inputs: true\n"
    )
    c = config.load(str(path), environ={})
    assert c.database == "postgresql://gw@db/gw"
    assert [u.name for u in c.users] == ["alice", "bob"] and c.users[1].admin
    assert c.queue("small") == config.Queue("small", 1, 2, 1)
    assert c.queue("big").max_running == 3
    assert c.max_artifact_bytes == 1024 and c.allow_local_inputs


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("colour: red\n", "unknown setting(s) colour"),
        ("users: [{name: a}]\n", "user 'a' has neither a token nor a password"),
        ("users: [{name: a, token: x, role: boss}]\n", "unknown key(s) role"),
        ("users: [{name: a, token: x}, {name: a, token: y}]\n", "a user name appears twice"),
        ("queues: {q: {max_running: 0}}\n", "queues.q.max_running is 0"),
        ("queues: {q: {}}\ndefault_queue: nope\n", "default_queue 'nope' is not one of"),
        ("queues: {q: {default_workers: 4, max_workers: 2}}\n", "default_workers 4 is above"),
        ("artifacts: {max_bytes: lots}\n", "artifacts.max_bytes 'lots' is not a size"),
        ("- a\n- b\n", "must hold a mapping"),
        ("clusters: [{name: r, kind: ray}]\n", "give address, the URL of the Ray head's"),
        ("users: [\n", "is not valid YAML"),
    ],
)
def test_a_bad_config_names_what_is_wrong(tmp_path, text, message):
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    with pytest.raises(UsageError) as info:
        config.load(str(path), environ={})
    assert message in str(info.value)


@pytest.mark.timeout(120)
def test_serve_with_a_bad_config_exits_2_with_one_paragraph(tmp_path):
    path = tmp_path / "gateway.yaml"
    path.write_text("queues: {q: {max_running: -1}}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "mrk8s.cli", "gateway", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("mrk8s: error: ")
    assert "queues.q.max_running is -1: give a whole number of at least 1" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_readme_config_example_is_a_valid_config():
    from tests.conftest import REPO

    text = (REPO / "README.md").read_text()
    block = text.split("The config file (every key optional):", 1)[1]
    block = block.split("```yaml\n", 1)[1].split("```", 1)[0]
    c = config.from_mapping(yaml.safe_load(block), environ={})
    assert [q.name for q in c.queues] == ["default", "big"]
    assert [(k.name, k.kind, k.weight) for k in c.clusters] == [
        ("local", "local", 1.0),
        ("east", "k8s", 3.0),
        ("west", "k8s", 1.0),
        ("lab", "ray", 1.0),
    ]
    assert c.queue("big").clusters == {"east": 3.0, "west": 1.0}
    assert [(u.name, u.admin) for u in c.users] == [("alice", False), ("bob", False), ("ops", True)]
