"""paho-mqtt driven by the asyncio loop: one connection attempt, its packets, its end.

paho's client is used as a protocol engine without its own thread: the event loop watches
the socket (``add_reader``/``add_writer``) and calls ``loop_read``/``loop_write``; a timer
calls ``loop_misc`` for keepalive. Only the blocking part of connecting (TCP, TLS handshake)
runs in a worker thread, while the loop does not touch the client.

Paho's internals are specialised in four places (pinned by the ``paho-mqtt>=2.1,<3`` requirement and
covered by the tests), for speed and for one missing option:

- ``_sock_recv`` reads the socket in large chunks and serves paho's byte-sized reads from that
  buffer (stock paho makes three system calls per message);
- ``_handle_publish`` decodes the common PUBLISH (QoS 0 or 1, no MQTT 5 properties) itself,
  straight into the source's callback: paho builds a message object with a lock, an empty
  properties object and a topic-matcher lookup for each one, half of its time per message.
  Anything else (QoS 2, properties such as a topic alias, a malformed packet) takes paho's way;
- PUBACKs are queued with ``_packet_queue`` many at a time, so a run of them is one write;
- ``_ssl_wrap_socket`` verifies the broker against ``server_hostname`` rather than the host
  connected to.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from tstoraged.runtime.wiring import ssl_context
from tstoraged_mqtt.config import MqttConfig

__all__ = ["BrokerConnection", "ConnectFailed", "describe_error"]

_READ_SIZE = 256 * 1024
_PACKETS_PER_WAKE = 2000
"""Packets handled per readable event before other tasks get the loop."""
_MISC_INTERVAL = 1.0
_PUBACK = struct.Struct("!BBH")
"""PUBACK: type 4, remaining length 2, packet id (on MQTT 5 too: success, no properties)."""
_AUTH_REFUSALS = frozenset(
    ["Not authorized", "Bad user name or password", "Bad authentication method"]
)


class ConnectFailed(Exception):
    """The broker could not be reached or refused the connection; the text says why."""


OnPublish = Callable[[str, bytes, int, int, bool], None]
"""``(topic, payload, qos, packet id, dup)`` of one received PUBLISH."""


def _topic_of(message: paho.MQTTMessage) -> str:
    try:
        return message.topic
    except UnicodeDecodeError:
        return repr(message._topic)  # paho keeps the raw bytes there


class _Client(paho.Client):
    """paho's client with buffered socket reads and a TLS name of our choosing."""

    def __init__(
        self,
        *args: Any,
        server_hostname: str | None = None,
        on_publish: OnPublish | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._rbuf = b""
        self._rpos = 0
        self._tls_name = server_hostname
        self._deliver = on_publish
        self._v5 = kwargs.get("protocol") == paho.MQTTv5

    def _handle_publish(self) -> MQTTErrorCode:
        deliver = self._deliver
        command = self._in_packet["command"]
        qos = (command & 0x06) >> 1
        if deliver is None or qos > 1:
            return super()._handle_publish()
        packet = self._in_packet["packet"]
        try:
            end = 2 + (packet[0] << 8 | packet[1])
            topic = packet[2:end].decode()
            mid = 0
            if qos:
                mid = packet[end] << 8 | packet[end + 1]
                end += 2
            if self._v5:
                if packet[end]:  # properties: let paho decode them
                    return super()._handle_publish()
                end += 1
        except (IndexError, UnicodeDecodeError):
            return super()._handle_publish()  # paho reports what is wrong
        if not topic or end > len(packet):
            return super()._handle_publish()
        deliver(topic, bytes(packet[end:]), qos, mid, bool(command & 0x08))
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def reset_buffer(self) -> None:
        """Forget unread bytes (a new connection starts)."""
        self._rbuf = b""
        self._rpos = 0

    def has_buffered(self) -> bool:
        """True when bytes were received but not yet parsed (no readable event will come)."""
        if self._rpos < len(self._rbuf):
            return True
        sock = self._sock
        return isinstance(sock, ssl.SSLSocket) and sock.pending() > 0

    def _sock_recv(self, bufsize: int) -> bytes:
        buf = self._rbuf
        pos = self._rpos
        available = len(buf) - pos
        if available <= 0:
            buf = super()._sock_recv(max(bufsize, _READ_SIZE))
            if not buf:
                return buf
            pos = 0
            available = len(buf)
        if bufsize >= available:
            self._rbuf = b""
            self._rpos = 0
            return buf[pos:] if pos else buf
        self._rbuf = buf
        self._rpos = pos + bufsize
        return buf[pos : pos + bufsize]

    def _ssl_wrap_socket(self, tcp_sock: socket.socket) -> ssl.SSLSocket:
        context = self._ssl_context
        assert context is not None
        ssl_sock = context.wrap_socket(
            tcp_sock, server_hostname=self._tls_name or self._host, do_handshake_on_connect=False
        )
        ssl_sock.settimeout(self._connect_timeout)
        ssl_sock.do_handshake()
        return ssl_sock


def describe_error(exc: BaseException) -> str:
    """One line saying why connecting failed (never with secrets: none are in these errors)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed: {exc.verify_message or exc.reason}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host: {exc.strerror}"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return f"{type(exc).__name__}: {exc}"


class BrokerConnection:
    """One paho client, connected again and again; the source drives it.

    :meth:`connect` makes one attempt (raises :class:`ConnectFailed`), after which packets
    flow through ``on_message`` until :attr:`lost` completes (with the reason). Reading can
    be paused (:meth:`pause_reading`) to turn a full pipeline into TCP backpressure.
    """

    def __init__(self, config: MqttConfig, on_message: OnPublish) -> None:
        self.config = config
        v5 = config.protocol == "5"
        self._v5 = v5
        client = _Client(
            CallbackAPIVersion.VERSION2,
            client_id=config.client_id or "",
            clean_session=None if v5 else config.clean_start,
            protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
            reconnect_on_failure=False,
            manual_ack=True,
            server_hostname=config.tls.server_hostname,
            on_publish=on_message,
        )
        client.suppress_exceptions = False
        if config.username is not None:
            password = config.password.get_secret_value() if config.password else None
            client.username_pw_set(config.username, password)
        context = ssl_context(config.tls)
        if context is not None:
            client.tls_set_context(context)
        client.connect_timeout = config.connect_timeout
        properties = None
        if v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = int(config.session_expiry)
            properties.ReceiveMaximum = config.max_in_flight
        client.connect_async(
            config.host,
            config.broker_port,
            keepalive=int(config.keepalive),
            clean_start=config.clean_start if v5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
            properties=properties,
        )
        client.on_message = lambda _c, _u, message: on_message(
            _topic_of(message), bytes(message.payload), message.qos, message.mid, message.dup
        )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_suback
        client.on_unsubscribe = self._on_suback
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        self.client = client
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sock: Any = None  # paho's SocketLike
        self._connack: asyncio.Future[tuple[bool, str | None]] | None = None
        self.lost: asyncio.Future[str] | None = None
        self._acks: dict[int, asyncio.Future[list[str | None]]] = {}
        self._paused = False
        self._misc: asyncio.TimerHandle | None = None
        self.session_present = False

    # -- connecting ------------------------------------------------------------------------------

    async def connect(self) -> bool:
        """One connection attempt up to CONNACK; returns whether the broker had our session."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self.client.reset_buffer()
        self._paused = False
        try:
            rc = await asyncio.wait_for(
                asyncio.to_thread(self.client.reconnect), self.config.connect_timeout + 1
            )
        except Exception as exc:
            raise ConnectFailed(describe_error(exc)) from None
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise ConnectFailed(paho.error_string(rc))
        sock = self.client.socket()
        if sock is None:
            raise ConnectFailed("no socket after connecting")
        self._sock = sock
        self._connack = loop.create_future()
        self.lost = loop.create_future()
        loop.add_reader(sock, self._on_readable)
        if self.client.want_write():
            loop.add_writer(sock, self._on_writable)
        self._schedule_misc()
        try:
            present, refusal = await asyncio.wait_for(
                asyncio.shield(self._connack), self.config.connect_timeout
            )
        except TimeoutError:
            self.abort()
            raise ConnectFailed("no CONNACK from the broker in time") from None
        except asyncio.CancelledError:
            self.abort()
            raise
        if refusal is not None:
            self.abort()
            hint = ""
            if refusal in _AUTH_REFUSALS:
                hint = f" (check username {self.config.username!r} and the password)"
            raise ConnectFailed(f"broker refused the connection: {refusal}{hint}")
        if self.lost.done():
            raise ConnectFailed(f"connection lost right after CONNACK: {self.lost.result()}")
        self.session_present = present
        return present

    def _on_connect(
        self, _client: Any, _userdata: Any, flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        if self._connack is None or self._connack.done():
            return
        if reason.is_failure:
            self._connack.set_result((False, str(reason)))
        else:
            self._connack.set_result((bool(flags.session_present), None))

    # -- subscribing -----------------------------------------------------------------------------

    async def subscribe(self, filters: list[tuple[str, int]]) -> list[str | None]:
        """Subscribe; per filter, None when granted or the broker's reason for refusing."""
        if not filters:
            return []
        if self._v5:
            rc, mid = self.client.subscribe(
                [(topic, SubscribeOptions(qos=qos)) for topic, qos in filters]
            )
        else:
            rc, mid = self.client.subscribe(filters)
        return await self._wait_ack(rc, mid, "SUBACK")

    async def unsubscribe(self, topics: list[str]) -> list[str | None]:
        """Unsubscribe; per topic, None when done or the broker's reason for refusing."""
        if not topics:
            return []
        rc, mid = self.client.unsubscribe(topics)
        return await self._wait_ack(rc, mid, "UNSUBACK")

    async def _wait_ack(self, rc: MQTTErrorCode, mid: int | None, what: str) -> list[str | None]:
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise ConnectionError(f"cannot send {what.replace('ACK', '')}: {paho.error_string(rc)}")
        assert self._loop is not None
        assert self.lost is not None
        future: asyncio.Future[list[str | None]] = self._loop.create_future()
        self._acks[mid] = future
        lost: asyncio.Future[Any] = self.lost
        done, _ = await asyncio.wait(
            [future, lost],
            timeout=self.config.connect_timeout,
            return_when=asyncio.FIRST_COMPLETED,
        )
        self._acks.pop(mid, None)
        if future in done:
            return future.result()
        if self.lost.done():
            raise ConnectionError(f"connection lost while waiting for {what}")
        raise ConnectionError(f"no {what} from the broker in time")

    def _on_suback(self, _client: Any, _userdata: Any, mid: int, reasons: Any, _props: Any) -> None:
        future = self._acks.get(mid)
        if future is None or future.done():
            return
        codes = reasons if isinstance(reasons, list) else [reasons]
        future.set_result([str(code) if code.is_failure else None for code in codes])

    # -- I/O -------------------------------------------------------------------------------------

    def _on_readable(self) -> None:
        client = self.client
        for _ in range(_PACKETS_PER_WAKE):
            if self._paused or client.socket() is None:
                return
            rc = client.loop_read()
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._lose(f"read failed: {paho.error_string(rc)}")
                return
            if not client.has_buffered():
                return
        # Bytes are still buffered and no readable event will announce them: go on soon.
        assert self._loop is not None
        self._loop.call_soon(self._on_readable)

    def _on_writable(self) -> None:
        rc = self.client.loop_write()
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._lose(f"write failed: {paho.error_string(rc)}")

    def _on_register_write(self, _client: Any, _userdata: Any, sock: Any) -> None:
        if self._loop is not None and sock is self._sock:
            self._loop.add_writer(sock, self._on_writable)

    def _on_unregister_write(self, _client: Any, _userdata: Any, sock: Any) -> None:
        if self._loop is not None and sock is self._sock:
            self._loop.remove_writer(sock)

    def _on_socket_close(self, _client: Any, _userdata: Any, sock: Any) -> None:
        if self._loop is not None:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(sock)
                self._loop.remove_writer(sock)
        if sock is self._sock:
            self._sock = None
            if self._misc is not None:
                self._misc.cancel()
                self._misc = None

    def _schedule_misc(self) -> None:
        assert self._loop is not None
        self._misc = self._loop.call_later(_MISC_INTERVAL, self._run_misc)

    def _run_misc(self) -> None:
        self._misc = None
        if self.client.socket() is None:
            return
        if self._paused:
            # Not reading, the answer to a ping could not be seen: paho would give up on the
            # connection after one keepalive. Acknowledgements keep the broker's side alive.
            self._schedule_misc()
            return
        if self.client.loop_misc() != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._lose("keepalive: no answer from the broker")
            return
        self._schedule_misc()

    def _on_disconnect(
        self, _client: Any, _userdata: Any, _flags: Any, reason: ReasonCode | int, _props: Any
    ) -> None:
        text = str(reason) if isinstance(reason, ReasonCode) else paho.error_string(reason)
        self._lose(f"disconnected: {text}")

    def _lose(self, reason: str) -> None:
        if self._connack is not None and not self._connack.done():
            self._connack.set_result((False, reason))
        if self.lost is not None and not self.lost.done():
            self.lost.set_result(reason)
        sock = self.client.socket()
        if sock is not None and self._loop is not None:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(sock)

    def pause_reading(self) -> None:
        """Stop reading packets (the pipeline is full): TCP backpressure to the broker."""
        if not self._paused and self._sock is not None and self._loop is not None:
            self._paused = True
            self._loop.remove_reader(self._sock)

    def resume_reading(self) -> None:
        """Read packets again (also those already buffered)."""
        if self._paused and self._sock is not None and self._loop is not None:
            self._paused = False
            self._loop.add_reader(self._sock, self._on_readable)
            self._loop.call_soon(self._on_readable)

    @property
    def paused(self) -> bool:
        """True while reading is paused."""
        return self._paused

    def ack(self, acks: list[tuple[int, int]]) -> None:
        """Acknowledge QoS 1/2 messages, in order: PUBACK (QoS 1) or PUBCOMP (QoS 2).

        The PUBACKs of a run go out as one write (paho would send each on its own): they are
        queued to paho as one packet, so they cannot interleave with its other output.
        """
        client = self.client
        pubacks: list[bytes] = []
        for mid, qos in acks:
            if qos == 1:
                pubacks.append(_PUBACK.pack(0x40, 2, mid))
                continue
            if pubacks:
                client._packet_queue(0x40, b"".join(pubacks), 0, 0)
                pubacks = []
            client.ack(mid, qos)
        if pubacks:
            client._packet_queue(0x40, b"".join(pubacks), 0, 0)

    def abort(self) -> None:
        """Drop the connection at once, without DISCONNECT (the session stays on the broker)."""
        sock = self.client.socket()
        if isinstance(sock, socket.socket):  # an SSLSocket is one too
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            # paho notices on its next read (end of stream) and reports the loss.
            if self._loop is not None and not self._paused:
                self._loop.call_soon(self._on_readable)
            else:
                self._lose("aborted")

    async def close(self) -> None:
        """Disconnect politely (DISCONNECT keeps a persistent session) and release the socket."""
        if self.client.socket() is not None and self.lost is not None and not self.lost.done():
            self.client.disconnect()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.lost), 2.0)
        sock = self.client.socket()
        if sock is not None and self._loop is not None:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(sock)
                self._loop.remove_writer(sock)
        with contextlib.suppress(Exception):
            self.client._sock_close()
        if self._misc is not None:
            self._misc.cancel()
            self._misc = None
