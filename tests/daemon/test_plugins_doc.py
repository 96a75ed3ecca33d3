"""docs/plugins.md is true: its example plugin module and config are taken from the doc text,
built, validated and run against a local HTTP endpoint (and mypy --strict checks the module)."""

from __future__ import annotations

import http.server
import importlib.util
import json
import os
import re
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import tstoraged_codecs

from tstoraged import Tick
from tstoraged.config import ConfigError, load_config
from tstoraged.plugins import PluginManager
from tstoraged.testing import RecordingContext

DOC = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"
_BLOCK = re.compile(r"```(\w+)\n# file: (\S+)[^\n]*\n(.*?)```", re.DOTALL)


def doc_files() -> dict[str, str]:
    """The code blocks of the doc that start with ``# file: <name>``, by name."""
    return {name: body for _, name, body in _BLOCK.findall(DOC.read_text())}


@pytest.fixture
def doc_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    source = doc_files()["tstoraged_http_poll.py"]
    path = tmp_path / "tstoraged_http_poll.py"
    path.write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = importlib.util.spec_from_file_location("tstoraged_http_poll", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "tstoraged_http_poll", module)  # as an import would
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def endpoint() -> Iterator[tuple[str, list[object]]]:
    """A local HTTP server answering GET with the JSON of ``answers[0]`` (the test sets it)."""
    answers: list[object] = [[]]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(answers[0]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/readings", answers
    finally:
        server.shutdown()
        server.server_close()


def manager_with(plugin: ModuleType) -> PluginManager:
    manager = PluginManager()
    manager.register(tstoraged_codecs, "codecs")
    manager.register(plugin, "http_poll")
    return manager


def doc_config(tmp_path: Path, url: str, **replace: str) -> Path:
    text = doc_files()["tstoraged.toml"].replace("http://127.0.0.1:8080/readings", url)
    text = text.replace('token = { credential = "plant-token" }\n', 'token = "t0ken"\n')
    for old, new in replace.items():
        text = text.replace(old, new)
    path = tmp_path / "tstoraged.toml"
    path.write_text(text)
    return path


async def test_the_doc_example_plugin_polls_maps_and_encodes(
    doc_plugin: ModuleType, endpoint: tuple[str, list[object]], tmp_path: Path
) -> None:
    url, answers = endpoint
    manager = manager_with(doc_plugin)
    assert manager.problems == ()
    (info,) = [i for i in manager.plugins() if i.name == "http_poll"]
    assert info.descriptions["codecs"] == {"scaled_int16": "value * scale as int16"}
    settings = load_config(doc_config(tmp_path, url), env={}, plugins=manager)
    (config,) = settings.sources
    assert (config.interval, config.poll_timeout) == (10.0, 8.0)
    context = RecordingContext(config, tmp_path / "state", codecs=manager.codecs)
    source = doc_plugin.HttpPollSource(config, context)
    answers[0] = [{"meter": 7, "value": 4.2}, {"meter": 8, "value": "x"}, "junk"]
    tick = Tick(at=1_764_612_010.0, skipped=0, started=1_764_612_010.001)
    await source.poll(tick)
    (record,) = context.records
    assert (record.key.cid, record.key.mid, record.key.moid) == (1, 7, 1)
    assert struct.unpack("<h", record.value) == (42,)
    reasons = sorted(reject.reason for reject in context.rejected)
    assert len(reasons) == 2
    assert "expected a JSON object" in reasons[0]
    assert "field 'value'" in reasons[1]


def test_the_doc_codec_refuses_a_zero_scale_at_its_key(
    doc_plugin: ModuleType, tmp_path: Path
) -> None:
    path = doc_config(tmp_path, "http://127.0.0.1:1/", **{"scale = 10": "scale = 0"})
    with pytest.raises(ConfigError) as info:
        load_config(path, env={}, plugins=manager_with(doc_plugin))
    (problem,) = info.value.problems
    assert str(problem).endswith(
        "sources[0].payload.scale: must not be 0 (every value would encode as 0)"
    )


async def test_a_refused_endpoint_fails_the_poll_not_the_source(
    doc_plugin: ModuleType, tmp_path: Path
) -> None:
    manager = manager_with(doc_plugin)
    settings = load_config(doc_config(tmp_path, "http://127.0.0.1:1/"), env={}, plugins=manager)
    (config,) = settings.sources
    context = RecordingContext(config, tmp_path / "state", codecs=manager.codecs)
    source = doc_plugin.HttpPollSource(config, context)
    await source._poll_once(Tick(at=10.0, skipped=0, started=10.0))
    assert context.metric_value("poll_failures_total") == 1
    assert context.problem is not None
    assert context.problem.startswith("poll failed: URLError")


def test_the_doc_example_is_clean_under_mypy_strict(tmp_path: Path) -> None:
    # The development install is editable, which mypy cannot follow: point it at the source
    # tree. (test_packaging.py checks the same with a normal, non-editable install.)
    module = tmp_path / "tstoraged_http_poll.py"
    module.write_text(doc_files()["tstoraged_http_poll.py"])
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",  # the repository's own settings for the tstoraged sources
            str(DOC.parents[1] / "pyproject.toml"),
            "--strict",
            "--no-incremental",
            str(module),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "MYPYPATH": str(DOC.parents[1])},
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_name_the_doc_lists_is_exported_by_tstoraged() -> None:
    import tstoraged

    text = DOC.read_text()
    start = text.index("Everything a plugin needs is importable from the package root")
    paragraph = text[start : text.index("\n\n", start)]
    listed = set(re.findall(r"`([A-Z]\w*|hookimpl)`", paragraph))
    # What issue 15 named, among them.
    assert {
        "Duration",
        "Size",
        "Secret",
        "KeyMapping",
        "CapMapping",
        "PayloadMapping",
        "CodecType",
        "ConfigRefused",
        "PollingSource",
    } <= listed
    assert sorted(name for name in listed if name not in tstoraged.__all__) == []
    assert all(getattr(tstoraged, name, None) is not None for name in listed)
    assert tstoraged.Size is tstoraged.ByteSize
