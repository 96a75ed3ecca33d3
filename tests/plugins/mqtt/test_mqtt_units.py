"""The mqtt plugin's parts without a broker: topic templates, decoders, config validation."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from tstoraged_mqtt.config import MqttConfig
from tstoraged_mqtt.decoders import BUILTIN_DECODERS
from tstoraged_mqtt.source import SubscriptionState, backoff_delays
from tstoraged_mqtt.topics import TopicTemplate

from tstoraged import hookimpl
from tstoraged.config.loader import load_config
from tstoraged.decoding import DecodeError, DecoderType
from tstoraged.plugins import PluginManager

DECODERS = {decoder.name: decoder for decoder in BUILTIN_DECODERS}
MAPPING: dict[str, Any] = {
    "key": {"cid": 1, "mid": 2, "moid": 3},
    "payload": {"format": "<d", "fields": ["value"]},
}


def decode(name: str, payload: bytes, **settings: Any) -> list[dict[str, Any]]:
    return [dict(reading) for reading in DECODERS[name].build(settings)(payload)]


# -- topics ---------------------------------------------------------------------------------


def test_template_names_segments_and_builds_the_filter() -> None:
    template = TopicTemplate("plant/{site}/{mid}/+/#")
    assert template.filter == "plant/+/+/+/#"
    assert template.subscription == "plant/+/+/+/#"
    assert template.match("plant/a/7/x/y/z") == {
        "topic": "plant/a/7/x/y/z",
        "site": "a",
        "mid": "7",
    }
    assert template.match("plant/a/7/x") == {"topic": "plant/a/7/x", "site": "a", "mid": "7"}
    assert template.match("plant/a/7") is None
    assert template.match("other/a/7/x") is None


def test_template_matches_exact_level_count_without_hash() -> None:
    template = TopicTemplate("s/{mid}")
    assert template.match("s/4") == {"topic": "s/4", "mid": "4"}
    assert template.match("s/4/extra") is None
    assert TopicTemplate("+/x").match("$SYS/x") is None  # wildcards skip $ topics


def test_shared_subscription_prefix() -> None:
    template = TopicTemplate("$share/ingest/plant/{mid}")
    assert template.share == "ingest"
    assert template.filter == "plant/+"
    assert template.subscription == "$share/ingest/plant/+"
    assert template.match("plant/5") == {"topic": "plant/5", "mid": "5"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a/#/b", "'#' must be the last level"),
        ("a/x{mid}", "mixes text"),
        ("a/{mid}/{mid}", "repeated: mid"),
        ("$share//a", "$share/<group>/<filter>"),
        ("a/{topic}", "whole topic"),
    ],
)
def test_bad_templates_are_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("$", r"\$")):
        TopicTemplate(text)


# -- decoders -------------------------------------------------------------------------------


def test_json_top_level_object_and_field_paths() -> None:
    assert decode("json", b'{"ts": 1, "v": 2.5}') == [{"ts": 1, "v": 2.5}]
    document = json.dumps({"time": 5, "data": {"t": [1.5, 2.5]}}).encode()
    assert decode("json", document, fields={"ts": "time", "temp": "data.t[1]"}) == [
        {"ts": 5, "temp": 2.5}
    ]
    with pytest.raises(DecodeError, match=r"no 'data\.x'"):
        decode("json", document, fields={"x": "data.x"})


def test_json_several_readings_from_arrays_and_maps() -> None:
    array = json.dumps({"ts": 9, "samples": [{"ch": 1, "v": 0.5}, {"ch": 2, "v": 0.7}]})
    assert decode("json", array.encode(), readings="samples", fields={"ts": "ts"}) == [
        {"ts": 9, "ch": 1, "v": 0.5},
        {"ts": 9, "ch": 2, "v": 0.7},
    ]
    named = json.dumps({"ts": 9, "values": {"temp": 21.5, "hum": 40}})
    assert decode("json", named.encode(), readings="values", fields={"ts": "ts"}) == [
        {"ts": 9, "name": "temp", "value": 21.5},
        {"ts": 9, "name": "hum", "value": 40},
    ]
    assert decode("json", b"[1, 2]") == [{"value": 1}, {"value": 2}]
    assert decode("json", b"21.5") == [{"value": 21.5}]


@pytest.mark.parametrize("payload", [b"{", b"\xff\xfe", b"", b'{"a": NaN'])
def test_json_garbage_is_a_decode_error(payload: bytes) -> None:
    with pytest.raises(DecodeError, match="not JSON"):
        decode("json", payload)


def test_text_raw_struct_and_csv() -> None:
    assert decode("text", b" 21.5\n") == [{"value": 21.5}]
    assert decode("text", b"-3", field="count") == [{"count": -3}]
    with pytest.raises(DecodeError, match="not a number"):
        decode("text", b"warm")
    with pytest.raises(DecodeError, match="finite"):
        decode("text", b"nan")
    assert decode("raw", b"\x00\x01") == [{"payload": b"\x00\x01"}]
    packed = struct.pack("<Qd", 7, 1.5)
    assert decode("struct", packed, format="<Qd", fields=["ts", "v"]) == [{"ts": 7, "v": 1.5}]
    assert (
        decode("struct", packed * 2, format="<Qd", fields=["ts", "v"], repeat=True)
        == [{"ts": 7, "v": 1.5}] * 2
    )
    with pytest.raises(DecodeError, match="format needs 16"):
        decode("struct", packed[:-1], format="<Qd", fields=["ts", "v"])
    lines = b"1,temp,21.5\n2,hum,40\n"
    assert decode("csv", lines, columns=["ts", "name", "v"]) == [
        {"ts": "1", "name": "temp", "v": "21.5"},
        {"ts": "2", "name": "hum", "v": "40"},
    ]
    with pytest.raises(DecodeError, match="line 1 has 2 columns"):
        decode("csv", b"1,2\n", columns=["a", "b", "c"])


def test_struct_decoder_config_counts_fields() -> None:
    with pytest.raises(ValidationError, match="unpacks 2 values but 1 fields"):
        DECODERS["struct"].build({"format": "<Qd", "fields": ["ts"]})


# -- config ---------------------------------------------------------------------------------


def config(**settings: Any) -> MqttConfig:
    return MqttConfig.model_validate(
        {
            "name": "m",
            "client_id": "c",
            "subscriptions": [{"topic": "a/{mid}"}],
            **MAPPING,
            **settings,
        }
    )


def test_persistent_session_needs_a_client_id() -> None:
    with pytest.raises(ValidationError) as caught:
        config(client_id=None)
    (error,) = caught.value.errors()
    assert error["loc"] == ("client_id",)
    assert "persistent session" in error["msg"]
    assert config(client_id=None, clean_start=True).client_id is None


def test_tstoraged_check_names_the_missing_client_id(tmp_path: Path) -> None:
    path = tmp_path / "tstoraged.toml"
    path.write_text(
        f"""
[daemon]
state_dir = "{tmp_path}"
[[sources]]
type = "mqtt"
name = "m"
key = {{ cid = 1, mid = "{{mid}}", moid = 1 }}
payload = {{ format = "<d", fields = ["value"] }}
subscriptions = [{{ topic = "a/{{mid}}" }}]
"""
    )
    checked = subprocess.run(
        [sys.executable, "-m", "tstoraged.cli", "check", "-c", str(path)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "TSTORAGED_LOAD_PLUGINS": "codecs,mqtt"},
    )
    assert checked.returncode == 2
    assert checked.stderr.strip().splitlines() == [
        f"{path}: sources[0].client_id: required with a persistent session "
        "(clean_start = false): the broker keeps the session, and the messages queued for "
        "it, under this id"
    ]


def test_password_is_a_secret(tmp_path: Path) -> None:
    secret = tmp_path / "pass"
    secret.write_text("hunter2\n")
    loaded = config(username="u", password={"file": str(secret)})
    assert loaded.password is not None
    assert loaded.password.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(loaded)
    assert "hunter2" not in loaded.model_dump_json()
    with pytest.raises(ValidationError, match="needs a username"):
        config(password="x")


def test_unknown_decoder_and_bad_decoder_settings_name_the_subscription() -> None:
    with pytest.raises(ValidationError, match=r"unknown decoder 'protobuf' \(known: csv, json"):
        config(decoder={"type": "protobuf"})
    with pytest.raises(
        ValidationError, match=r"subscriptions\[1\].decoder: columns: Field required"
    ):
        config(subscriptions=[{"topic": "a/+"}, {"topic": "b/+", "decoder": {"type": "csv"}}])


def test_port_defaults_follow_tls() -> None:
    assert config().broker_port == 1883
    assert config(tls={"enabled": True}).broker_port == 8883


def test_decoder_from_another_plugin(tmp_path: Path) -> None:
    """A plugin adds a decoder through the hook; the mqtt source config accepts and builds it."""

    class Hex:
        @hookimpl
        def tstoraged_message_decoders(self) -> list[DecoderType[Any]]:
            from pydantic import BaseModel

            class NoSettings(BaseModel):
                pass

            def factory(_config: NoSettings) -> Any:
                return lambda payload: [{"value": int(payload, 16)}]

            return [DecoderType("hex", NoSettings, factory)]

    plugins = PluginManager.from_entry_points({"TSTORAGED_LOAD_PLUGINS": "codecs,mqtt"})
    plugins.register(Hex(), "hex")
    assert {"json", "hex"} <= set(plugins.decoders)
    path = tmp_path / "tstoraged.toml"
    path.write_text(
        f"""
[daemon]
state_dir = "{tmp_path}"
[[sources]]
type = "mqtt"
name = "m"
client_id = "c"
key = {{ cid = 1, mid = 2, moid = 3 }}
payload = {{ format = "<q", fields = ["value"] }}
decoder = {{ type = "hex" }}
subscriptions = [{{ topic = "a/b" }}]
"""
    )
    settings = load_config(path, {}, plugins)
    (source,) = settings.enabled_sources
    assert isinstance(source, MqttConfig)
    assert source.build_decoder(source.subscriptions[0])(b"ff") == [{"value": 255}]


def test_subscription_state_belongs_to_one_client_id(tmp_path: Path) -> None:
    SubscriptionState(tmp_path, "a").save({"x/+", "y/#"})
    assert SubscriptionState(tmp_path, "a").load() == {"x/+", "y/#"}
    assert SubscriptionState(tmp_path, "b").load() == set()


def test_backoff_doubles_up_to_the_cap_with_jitter() -> None:
    delay = backoff_delays(0.5, 4.0, 0.5)
    for attempt, base in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (10, 4.0)]:
        values = [delay(attempt) for _ in range(50)]
        assert all(base * 0.5 <= value <= base for value in values)
        assert len(set(values)) > 1


def test_the_reference_config_example_is_valid(tmp_path: Path) -> None:
    """The commented [[sources]] example of config/tstoraged.toml, uncommented, validates."""
    reference = Path(__file__).resolve().parents[3] / "config" / "tstoraged.toml"
    text = reference.read_text()
    start = text.index('# [[sources]]\n# type = "mqtt"')
    lines = []
    for line in text[start:].splitlines():
        if not line.startswith("#"):
            break  # the end of the commented example
        lines.append(line[2:])
    example = "\n".join(lines)
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text("-")
    (tmp_path / "mqtt-password").write_text("pw\n")
    example = example.replace("/etc/tstoraged/broker-ca.pem", str(ca_file))
    path = tmp_path / "tstoraged.toml"
    path.write_text(f'[daemon]\nstate_dir = "{tmp_path}"\n\n{example}\n')
    plugins = PluginManager.from_entry_points({"TSTORAGED_LOAD_PLUGINS": "codecs,mqtt"})
    settings = load_config(path, {"CREDENTIALS_DIRECTORY": str(tmp_path)}, plugins)
    (source,) = settings.enabled_sources
    assert isinstance(source, MqttConfig)
    assert source.subscriptions[0].template.share == "tstoraged"
    assert source.password is not None
    assert source.password.get_secret_value() == "pw"


def test_journal_knows_the_durable_emits_of_its_client_id(tmp_path: Path) -> None:
    from tstoraged_mqtt.journal import AckJournal, digest

    journal = AckJournal(tmp_path, "gw1", keep=4)
    for seq in range(1, 11):
        journal.emitted(seq, [(seq, digest("t", b"%d" % seq))])
        if seq <= 6:
            journal.acknowledged(seq)
    journal.close()
    # Acknowledged up to 6; the spool knows 8 durable: 9 and 10 were not.
    loaded = AckJournal(tmp_path, "gw1", keep=4)
    known = loaded.load(durable_seq=8)
    assert {7, 8} <= set(known)
    assert not {9, 10} & set(known)
    assert known[8] == digest("t", b"8")
    assert loaded.next_seq == 11
    assert set(AckJournal(tmp_path, "gw1", keep=4).load()) <= {3, 4, 5, 6}  # kept 4 recent
    assert AckJournal(tmp_path, "gw2", keep=4).load() == {}
