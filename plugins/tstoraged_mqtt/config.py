"""The ``type = "mqtt"`` source configuration."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from tstoraged.config.model import TLSSettings
from tstoraged.config.secrets import Secret
from tstoraged.config.units import Duration
from tstoraged.decoding import DecoderType, MessageDecoder
from tstoraged.source import SourceConfig
from tstoraged_mqtt.topics import TopicTemplate

__all__ = ["DecoderSpec", "MqttConfig", "Reconnect", "Subscription"]

MAX_RECEIVE_MAXIMUM = 65_535
"""MQTT 5 Receive Maximum is a 16-bit number; packet ids are too."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Reconnect(_Model):
    """Reconnection backoff: doubles from ``initial`` to ``max``, each wait randomised."""

    initial: Duration = Field(default=0.5, gt=0, description="First wait after a failure.")
    max: Duration = Field(default=30.0, gt=0, description="Longest wait.")
    jitter: float = Field(
        default=0.5, ge=0, le=1, description="Fraction of each wait that is random (0..1)."
    )

    @model_validator(mode="after")
    def _ordered(self) -> Reconnect:
        if self.max < self.initial:
            raise ValueError("max must be at least initial")
        return self


class DecoderSpec(BaseModel):
    """``decoder = { type = "json", ... }``: the decoder's name and its own settings."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: str = Field(default="json", description="Decoder name (json, text, raw, struct, csv).")

    def settings(self) -> dict[str, Any]:
        """The decoder's own keys."""
        return dict(self.model_extra or {})


class Subscription(_Model):
    """One topic filter (a template with ``{name}`` segments) with its QoS and decoder."""

    topic: str = Field(
        description="Topic filter; {name} levels become fields; $share/<group>/... to share."
    )
    qos: Literal[0, 1, 2] = Field(default=1, description="Subscription QoS.")
    decoder: DecoderSpec | None = Field(
        default=None, description="How payloads decode (default: the source's decoder)."
    )
    expect_every: Duration | None = Field(
        default=None,
        gt=0,
        description="Data is expected at least this often; silence longer than that is a "
        "problem (shown in status) and the connection is re-established.",
    )

    @field_validator("topic")
    @classmethod
    def _valid_template(cls, value: str) -> str:
        TopicTemplate(value)
        return value

    @property
    def template(self) -> TopicTemplate:
        """The parsed topic template (new object each time: cheap, holds a match cache)."""
        return TopicTemplate(self.topic)


def _decoder_types(info: ValidationInfo) -> Mapping[str, DecoderType[Any]]:
    """The installed decoders: from the daemon's plugins, else the built-in ones."""
    context = info.context if isinstance(info.context, Mapping) else {}
    plugins = context.get("plugins")
    decoders = getattr(plugins, "decoders", None)
    if decoders:
        return dict(decoders)
    from tstoraged_mqtt.decoders import BUILTIN_DECODERS

    return {decoder.name: decoder for decoder in BUILTIN_DECODERS}


class MqttConfig(SourceConfig):
    """Settings of an ``mqtt`` source: broker, session, subscriptions, decoding."""

    type: Literal["mqtt"] = "mqtt"
    host: str = Field(default="localhost", min_length=1, description="Broker host name.")
    port: int | None = Field(
        default=None, ge=1, le=65535, description="Broker port (default: 1883, 8883 with TLS)."
    )
    protocol: Literal["5", "3.1.1"] = Field(default="5", description="MQTT protocol version.")
    clean_start: bool = Field(
        default=False,
        description="Start a new session on every connect. Default false: a persistent "
        "session, so the broker keeps QoS 1/2 messages while the daemon is away.",
    )
    client_id: str | None = Field(
        default=None,
        validate_default=True,
        min_length=1,
        max_length=65535,
        description="Client identifier; required with a persistent session (the broker keys "
        "the session by it). Unique per daemon.",
    )
    session_expiry: Duration = Field(
        default=86400.0,
        ge=0,
        description="MQTT 5: how long the broker keeps the session after a disconnect.",
    )
    keepalive: Duration = Field(default=30.0, ge=5, le=65535, description="MQTT keepalive.")
    connect_timeout: Duration = Field(
        default=10.0, gt=0, description="Longest wait for TCP, TLS and CONNACK."
    )
    username: str | None = Field(default=None, min_length=1, description="User name.")
    password: Secret | None = Field(
        default=None, description="Password: literal, { file = ... } or { credential = ... }."
    )
    tls: TLSSettings = Field(
        default_factory=TLSSettings,
        description="TLS to the broker, as [tstorage.tls]: enabled, ca_file, cert_file, "
        "key_file, key_password, verify (on by default), server_hostname.",
    )
    reconnect: Reconnect = Field(default_factory=Reconnect)
    max_in_flight: int = Field(
        default=20_000,
        ge=1,
        le=MAX_RECEIVE_MAXIMUM,
        description="QoS 1/2 messages received but not yet durable and acknowledged (and "
        "messages not yet handed to the pipeline); reading stops at this bound. Sent to the "
        "broker as Receive Maximum on MQTT 5.",
    )
    stop_ack_timeout: Duration = Field(
        default=5.0,
        ge=0,
        description="On stop or reload, how long to wait for the records already handed to "
        "the pipeline to become durable, so their messages are acknowledged, not sent again.",
    )
    skip_repeats: bool = Field(
        default=True,
        description="With a deterministic key (cap from the payload): journal QoS 1 messages "
        "(~30 bytes each, in the state dir) so that copies the broker sends again after a "
        "crash are acknowledged, not stored twice.",
    )
    subscriptions: list[Subscription] = Field(min_length=1, description="Topic filters.")
    decoder: DecoderSpec = Field(
        default_factory=DecoderSpec, description="Default decoder of the subscriptions."
    )

    _decoder_types: dict[str, DecoderType[Any]] = PrivateAttr(default_factory=dict)

    @field_validator("client_id")
    @classmethod
    def _client_id_for_session(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and info.data.get("clean_start") is False:
            raise ValueError(
                "required with a persistent session (clean_start = false): the broker keeps "
                "the session, and the messages queued for it, under this id"
            )
        return value

    @field_validator("session_expiry")
    @classmethod
    def _session_kept(cls, value: float, info: ValidationInfo) -> float:
        if value == 0 and info.data.get("clean_start") is False:
            raise ValueError(
                "0 ends the session at every disconnect; a persistent session "
                '(clean_start = false) needs a session expiry, e.g. "1d"'
            )
        return value

    @field_validator("password")
    @classmethod
    def _password_needs_user(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None and info.data.get("username") is None:
            raise ValueError("a password needs a username")
        return value

    @field_validator("decoder")
    @classmethod
    def _known_default_decoder(cls, value: DecoderSpec, info: ValidationInfo) -> DecoderSpec:
        _check_decoder(value, _decoder_types(info))
        return value

    @field_validator("subscriptions")
    @classmethod
    def _subscriptions(cls, value: list[Subscription], info: ValidationInfo) -> list[Subscription]:
        types = _decoder_types(info)
        seen: dict[str, int] = {}
        for index, subscription in enumerate(value):
            if subscription.decoder is not None:
                try:
                    _check_decoder(subscription.decoder, types)
                except ValueError as exc:
                    raise ValueError(f"subscriptions[{index}].decoder: {exc}") from None
            sent = subscription.template.subscription
            if sent in seen:
                raise ValueError(f"subscriptions[{seen[sent]}] and [{index}] both subscribe {sent}")
            seen[sent] = index
        return value

    @model_validator(mode="after")
    def _remember_decoders(self, info: ValidationInfo) -> MqttConfig:
        self._decoder_types = dict(_decoder_types(info))
        return self

    @property
    def broker_port(self) -> int:
        """The port to connect to."""
        if self.port is not None:
            return self.port
        return 8883 if self.tls.enabled else 1883

    def build_decoder(self, subscription: Subscription) -> MessageDecoder:
        """The decoder of ``subscription`` (its own, or the source's), built from its settings."""
        spec = subscription.decoder or self.decoder
        return self._decoder_types[spec.type].build(spec.settings())


def _check_decoder(spec: DecoderSpec, types: Mapping[str, DecoderType[Any]]) -> None:
    decoder = types.get(spec.type)
    if decoder is None:
        known = ", ".join(sorted(types)) or "none installed"
        raise ValueError(f"unknown decoder {spec.type!r} (known: {known})")
    try:
        decoder.config_model.model_validate(spec.settings())
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or spec.type}: "
            f"{str(error['msg']).removeprefix('Value error, ')}"
            for error in exc.errors()
        )
        raise ValueError(problems) from None
