"""``tstoraged plugins``, run as a real process against installed distributions."""

from __future__ import annotations

import json
import os

import pytest
import test_plugins_support as support


@pytest.fixture
def cli_env(tmp_path) -> dict[str, str]:
    support.make_distribution(tmp_path, "tstoraged-topics", {"topics": support.MODULE})
    support.make_distribution(
        tmp_path,
        "tstoraged-heavy",
        {"heavy": "tstoraged_heavy_plugin"},
        version="2.0",
        extras=["heavy"],
        modules={"tstoraged_heavy_plugin": "import paho_not_installed_here\n"},
    )
    return support.cli_environment(tmp_path, "topics,heavy,loadavg")


tstoraged = support.run_cli


def test_plugins_json_lists_loaded_and_unavailable_plugins(cli_env):
    result = tstoraged("plugins", "--json", env=cli_env)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    plugins = {plugin["name"]: plugin for plugin in document["plugins"]}
    assert list(plugins) == ["heavy", "loadavg", "topics"]
    assert document["problems"] == []
    assert plugins["topics"] == {
        "name": "topics",
        "status": "loaded",
        "module": support.MODULE,
        "distribution": "tstoraged-topics",
        "version": "1.2.3",
        "source_types": ["topics"],
        "codecs": ["fixed"],
        "commands": [],
        "decoders": [],
        "hooks": ["tstoraged_payload_codecs", "tstoraged_source_types"],
        "reason": None,
        "install_hint": None,
        "errors": [],
        "descriptions": {
            "source_types": {"topics": "test source"},
            "codecs": {"fixed": "test codec"},
        },
    }
    assert plugins["loadavg"]["distribution"] == "tstoraged-plugin-example"
    assert plugins["loadavg"]["source_types"] == ["loadavg"]
    assert plugins["heavy"]["status"] == "unavailable"
    assert plugins["heavy"]["reason"] == (
        "ModuleNotFoundError: No module named 'paho_not_installed_here'"
    )
    assert plugins["heavy"]["install_hint"] == "pip install 'tstoraged-heavy[heavy]'"


def test_plugins_text_output_shows_package_version_and_status(cli_env):
    result = tstoraged("plugins", env=cli_env)
    assert result.returncode == 0, result.stderr
    blocks = result.stdout.strip().split("\n\n")
    assert blocks[0].splitlines() == [
        "heavy  (tstoraged-heavy 2.0; module tstoraged_heavy_plugin)",
        "  status: unavailable: ModuleNotFoundError: No module named 'paho_not_installed_here'",
        "  to fix: pip install 'tstoraged-heavy[heavy]'",
    ]
    assert blocks[2].splitlines() == [
        f"topics  (tstoraged-topics 1.2.3; module {support.MODULE})",
        "  status: loaded",
        "  source types: topics (test source)",
        "  codecs: fixed (test codec)",
        "  commands: -",
        "  hooks: tstoraged_payload_codecs, tstoraged_source_types",
    ]


def test_plugins_with_autoloading_disabled(cli_env):
    cli_env["TSTORAGED_LOAD_PLUGINS"] = ""
    result = tstoraged("plugins", "--json", env=cli_env)
    assert result.returncode == 0
    assert json.loads(result.stdout) == {"plugins": [], "problems": []}


CLASHING_MODULE = f"""
from tstoraged import SourceType, hookimpl
from {support.MODULE} import TopicsConfig, TopicsSource


@hookimpl
def tstoraged_source_types():
    return [SourceType("topics", TopicsSource, TopicsConfig, "a fork")]
"""


def test_plugins_reports_a_name_clash_and_exits_1(cli_env, tmp_path):
    fork_site = tmp_path / "fork"
    support.make_distribution(
        fork_site, "topics-fork", {"fork": "topics_fork"}, modules={"topics_fork": CLASHING_MODULE}
    )
    cli_env["PYTHONPATH"] += os.pathsep + str(fork_site)
    cli_env["TSTORAGED_LOAD_PLUGINS"] = "topics,fork"
    result = tstoraged("plugins", "--json", env=cli_env)
    assert result.returncode == 1
    assert json.loads(result.stdout)["problems"] == [
        "source type 'topics' is contributed by both plugin 'topics' and plugin 'fork'"
    ]
    check = tstoraged("check", "-q", "-c", os.devnull, env=cli_env)
    assert check.returncode == 2
    assert check.stderr == (
        "plugins: source type 'topics' is contributed by both plugin 'topics' and plugin 'fork'\n"
    )
    text = tstoraged("plugins", env=cli_env)
    fork = next(block for block in text.stdout.split("\n\n") if block.startswith("fork"))
    assert fork.splitlines()[1:3] == [
        "  status: error",
        "  error: source type 'topics' is contributed by both plugin 'topics' and plugin 'fork'",
    ]
