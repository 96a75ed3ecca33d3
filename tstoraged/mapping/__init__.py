"""The mapping shared by all sources: named fields -> TStorage key, capture time and payload.

A source turns its input into named fields; :func:`compile_mapping` turns the source's
``key``/``cap``/``payload`` config, once at start, into a :class:`CompiledMapping` that
turns fields into ``Record(Key(cid, mid, moid, cap, -1), payload_bytes)``.

- ``model``: the config tables; ``compile``: compilation and the compiled mapping;
  ``keyparts``, ``timeparse``, ``convert``: the exact conversions with precise errors;
  ``codecs``: the payload codec contract (built-in codecs are the ``tstoraged_codecs`` plugin).
"""

from tstoraged.mapping.codecs import CodecType, PayloadEncoder
from tstoraged.mapping.compile import CompiledMapping, MappingConfig, compile_mapping
from tstoraged.mapping.errors import MappingConfigError, MappingError

__all__ = [
    "CodecType",
    "CompiledMapping",
    "MappingConfig",
    "MappingConfigError",
    "MappingError",
    "PayloadEncoder",
    "compile_mapping",
]
