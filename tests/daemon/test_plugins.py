"""Plugin discovery through entry points, TSTORAGED_LOAD_PLUGINS, unavailable plugins, clashes."""

from __future__ import annotations

import importlib.metadata

import pytest
import test_plugins_support as support

from tstoraged import SourceType, hookimpl
from tstoraged.config import ConfigError, load_config
from tstoraged.plugins import PluginManager

BROKEN_MODULE = "import paho_mqtt_not_installed_for_this_test\n"


@pytest.fixture
def fake_site(tmp_path, monkeypatch):
    """A sys.path entry holding two installed distributions: a working and a broken plugin."""
    support.make_distribution(
        tmp_path,
        "tstoraged-topics",
        {"topics": support.MODULE},
    )
    support.make_distribution(
        tmp_path,
        "tstoraged-heavy",
        {"heavy": "tstoraged_heavy_plugin"},
        extras=["heavy"],
        modules={"tstoraged_heavy_plugin": BROKEN_MODULE},
    )
    monkeypatch.syspath_prepend(str(support.HERE))
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_installed_distributions_are_discovered_through_entry_points(fake_site):
    manager = PluginManager.from_entry_points({"TSTORAGED_LOAD_PLUGINS": "topics"})
    assert set(manager.source_types) == {"topics"}
    assert set(manager.codecs) == {"fixed"}
    (info,) = manager.plugins()
    assert info.name == "topics"
    assert info.status == "loaded"
    assert (info.distribution, info.version) == ("tstoraged-topics", "1.2.3")
    assert info.module == support.MODULE
    assert info.source_types == ("topics",)
    assert info.codecs == ("fixed",)
    assert info.hooks == ("tstoraged_payload_codecs", "tstoraged_source_types")


def test_the_example_plugin_package_is_discovered_when_installed():
    entry_points = importlib.metadata.entry_points(group="tstoraged", name="loadavg")
    assert entry_points, (
        "the example plugin is not installed: pip install -e examples/tstoraged-plugin-example"
    )
    manager = PluginManager.from_entry_points({"TSTORAGED_LOAD_PLUGINS": "loadavg"})
    source_type = manager.source_types["loadavg"]
    assert source_type.source_class.__module__ == "tstoraged_example.source"
    (info,) = manager.plugins()
    assert (info.name, info.status) == ("loadavg", "loaded")
    assert info.distribution == "tstoraged-plugin-example"
    assert info.source_types == ("loadavg",)


def test_the_example_plugin_config_is_validated_by_load_config(tmp_path):
    manager = PluginManager.from_entry_points({"TSTORAGED_LOAD_PLUGINS": "loadavg"})
    path = tmp_path / "c.toml"
    path.write_text('[[sources]]\ntype = "loadavg"\nname = "load"\ninterval = "never"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, env={}, plugins=manager)
    assert str(info.value).startswith(f"{path}: sources[0].interval = 'never': expected a duration")


def test_unset_load_plugins_loads_every_installed_plugin(fake_site):
    manager = PluginManager.from_entry_points({})
    names = {info.name for info in manager.plugins()}
    installed = {ep.name for ep in importlib.metadata.entry_points(group="tstoraged")}
    assert names == installed
    assert {"topics", "heavy", "loadavg"} <= names


def test_empty_load_plugins_loads_none(fake_site):
    manager = PluginManager.from_entry_points({"TSTORAGED_LOAD_PLUGINS": ""})
    assert manager.plugins() == []
    assert manager.source_types == {}


def test_load_plugins_names_a_plugin_that_is_not_installed(fake_site):
    manager = PluginManager.from_entry_points({"TSTORAGED_LOAD_PLUGINS": "topics, nosuch"})
    infos = {info.name: info for info in manager.plugins()}
    assert infos["topics"].status == "loaded"
    assert infos["nosuch"].status == "unavailable"
    assert infos["nosuch"].reason == "not installed: no entry point 'nosuch' in group 'tstoraged'"


def test_plugin_that_fails_to_import_is_unavailable_with_reason_and_fix(fake_site):
    manager = PluginManager.from_entry_points({"TSTORAGED_LOAD_PLUGINS": "topics,heavy"})
    assert set(manager.source_types) == {"topics"}  # the others still load
    info = manager.unavailable["heavy"]
    assert info.status == "unavailable"
    assert info.reason == (
        "ModuleNotFoundError: No module named 'paho_mqtt_not_installed_for_this_test'"
    )
    assert info.install_hint == "pip install 'tstoraged-heavy[heavy]'"
    assert (info.distribution, info.version) == ("tstoraged-heavy", "1.2.3")


def test_config_using_an_unavailable_plugin_says_what_to_install(fake_site, tmp_path):
    manager = PluginManager.from_entry_points({"TSTORAGED_LOAD_PLUGINS": "topics,heavy"})
    path = tmp_path / "c.toml"
    path.write_text('[[sources]]\ntype = "heavy"\nname = "a"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, env={}, plugins=manager)
    assert str(info.value) == (
        f"{path}: sources[0].type = 'heavy': unknown source type (known: topics); "
        "plugin 'heavy' (tstoraged-heavy) is unavailable: ModuleNotFoundError: No module named "
        "'paho_mqtt_not_installed_for_this_test'; pip install 'tstoraged-heavy[heavy]'"
    )


def test_missing_module_without_extra_names_the_module(tmp_path, monkeypatch):
    support.make_distribution(
        tmp_path, "other", {"other": "other_plugin"}, modules={"other_plugin": BROKEN_MODULE}
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    manager = PluginManager.from_entry_points({"TSTORAGED_LOAD_PLUGINS": "other"})
    assert manager.unavailable["other"].install_hint == (
        "install the package that provides the Python module "
        "'paho_mqtt_not_installed_for_this_test'"
    )


def test_explicitly_registered_plugins_contribute_without_entry_points():
    manager = PluginManager()
    manager.register(support, "test", distribution="tests", version="0")
    assert manager.source_types["topics"].config_model is support.TopicsConfig
    assert manager.codecs["fixed"].config_model is support.FixedConfig
    assert manager.problems == ()


def test_source_type_clash_names_both_plugins():
    manager = PluginManager()
    manager.register(support, "first")
    manager.register(support.TopicsAgain(), "second")
    assert manager.problems == (
        "source type 'topics' is contributed by both plugin 'first' and plugin 'second'",
    )
    # The first registration keeps the name; both plugins show the error.
    assert manager.source_types["topics"].description == "test source"
    assert [(info.status, info.errors) for info in manager.plugins()] == [
        ("error", manager.problems),
        ("error", manager.problems),
    ]


def test_codec_clash_names_both_plugins():
    class CodecAgain:
        @hookimpl
        def tstoraged_payload_codecs(self):
            return support.tstoraged_payload_codecs()

    manager = PluginManager()
    manager.register(support, "first")
    manager.register(CodecAgain(), "second")
    assert manager.problems == (
        "codec 'fixed' is contributed by both plugin 'first' and plugin 'second'",
    )


def test_a_failing_hook_is_a_problem_of_that_plugin_only():
    class Broken:
        @hookimpl
        def tstoraged_source_types(self):
            raise RuntimeError("boom")

    manager = PluginManager()
    manager.register(support, "good")
    manager.register(Broken(), "broken")
    assert set(manager.source_types) == {"topics"}
    assert manager.problems == (
        "plugin 'broken': tstoraged_source_types() failed: RuntimeError: boom",
    )


def test_a_hook_returning_the_wrong_type_is_reported():
    class Wrong:
        @hookimpl
        def tstoraged_source_types(self):
            return ["not a SourceType"]

    class WrongModel:
        @hookimpl
        def tstoraged_source_types(self):
            return [SourceType("bad", support.TopicsSource, dict)]  # type: ignore[arg-type]

    manager = PluginManager()
    manager.register(Wrong(), "wrong")
    manager.register(WrongModel(), "wrongmodel")
    assert manager.problems == (
        "plugin 'wrong': expected tstoraged.SourceType items, got 'not a SourceType'",
        "plugin 'wrongmodel': source type 'bad': config_model must subclass "
        "tstoraged.SourceConfig, got <class 'dict'>",
    )
    statuses = {info.name: (info.status, info.errors) for info in manager.plugins()}
    assert statuses["wrongmodel"] == ("error", (manager.problems[1],))
    assert statuses["wrong"][0] == "error"


def test_plugins_are_listed_sorted_by_name():
    manager = PluginManager()
    manager.register(support.TopicsAgain(), "zeta")
    manager.register(support, "alpha")
    assert [info.name for info in manager.plugins()] == ["alpha", "zeta"]


class Misspelled:
    """Hook-name mistakes, as pytest reports them for ``pytest_*`` names."""

    @hookimpl
    def tstoraged_source_type(self) -> list[SourceType]:  # the hook is ..._types
        return []

    def tstoraged_payload_codecs(self) -> list[object]:  # not marked: pluggy ignores it
        return []

    def tstoraged_comands(self) -> list[object]:  # misspelled and not marked
        return []

    def tstoraged_helper_of_mine(self) -> None:  # unrelated to any hook: fine
        pass


def test_hook_name_mistakes_are_errors_naming_the_plugin_and_the_closest_hook():
    manager = PluginManager()
    manager.register(Misspelled(), "typos")
    manager.register(support, "good")
    problems = manager.problems
    assert len(problems) == 3, problems
    assert problems[0] == (
        "plugin 'typos': tstoraged_comands() looks like the hook 'tstoraged_commands' but is "
        "not one (misspelled, and not marked @tstoraged.hookimpl)"
    )
    assert problems[1] == (
        "plugin 'typos': tstoraged_payload_codecs() is not marked @tstoraged.hookimpl, "
        "so it is never called"
    )
    assert problems[2].startswith(
        "plugin 'typos': unknown hook 'tstoraged_source_type' "
        "(did you mean 'tstoraged_source_types'?); the hooks are: tstoraged_commands, "
    )
    infos = {info.name: info for info in manager.plugins()}
    assert infos["typos"].status == "error"
    assert infos["typos"].errors == problems
    assert infos["good"].status == "loaded"


def test_a_source_class_that_is_not_a_source_is_an_error():
    class NotASource:
        @hookimpl
        def tstoraged_source_types(self):
            return [SourceType("bad", dict, support.TopicsConfig)]  # type: ignore[arg-type]

    manager = PluginManager()
    manager.register(NotASource(), "bad")
    (problem,) = manager.problems
    assert "source_class must subclass tstoraged.Source" in problem
    assert manager.source_types == {}


def test_descriptions_of_source_types_and_codecs_are_reported():
    manager = PluginManager()
    manager.register(support, "test")
    (info,) = manager.plugins()
    assert info.descriptions == {
        "source_types": {"topics": "test source"},
        "codecs": {"fixed": "test codec"},
    }
