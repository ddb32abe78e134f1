"""ReplayService messages <-> numpy columns and buffer specs, shared by the servicer and the client.

Columns travel as batch.proto Tensors (bytes + dtype + shape). A malformed one is
InvalidArgument naming the field, raised before the buffer sees anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

import numpy as np

from .errors import InvalidArgument
from .generated import replay_pb2 as rpb
from .messages import read_tensor, write_tensor


class FieldSpec(NamedTuple):
    """One column: the dtype and per-item shape of a field."""

    dtype: np.dtype
    shape: tuple[int, ...]


def field_spec(dtype: object, shape: tuple[int, ...] = ()) -> FieldSpec:
    return FieldSpec(np.dtype(dtype), tuple(int(d) for d in shape))


def write_fields(out: object, columns: Mapping[str, np.ndarray]) -> None:
    """Append one Field per column to a repeated `fields` of a request or response."""
    for name, column in columns.items():
        write_tensor(out.add(name=name).tensor, column)


def read_fields(fields: Iterable[rpb.Field]) -> dict[str, np.ndarray]:
    """Columns by name (views of the message's bytes); a repeated name is InvalidArgument."""
    columns: dict[str, np.ndarray] = {}
    for field in fields:
        if field.name in columns:
            raise InvalidArgument(f"fields: {field.name!r} appears twice")
        columns[field.name] = read_tensor(field.tensor, f"fields[{field.name!r}]")
    return columns


def spec_to_proto(spec: Mapping[str, FieldSpec]) -> list[rpb.FieldSpec]:
    return [rpb.FieldSpec(name=name, dtype=s.dtype.str, shape=s.shape) for name, s in spec.items()]


def spec_from_proto(specs: Iterable[rpb.FieldSpec]) -> dict[str, FieldSpec]:
    return {s.name: field_spec(np.dtype(s.dtype), tuple(s.shape)) for s in specs}


def info_to_proto(info: Mapping[str, object], spec: Mapping[str, FieldSpec]) -> rpb.InfoResponse:
    limit = info["rate_limiter"]
    return rpb.InfoResponse(
        capacity=info["capacity"],
        size=info["size"],
        inserted=info["inserted"],
        sampled=info["sampled"],
        sampler=info["sampler"],
        alpha=info["alpha"],
        beta=info["beta"],
        spec=spec_to_proto(spec),
        rate_limit=rpb.RateLimit(
            samples_per_insert=limit["samples_per_insert"],
            min_size_to_sample=limit["min_size_to_sample"],
            error_buffer=limit["error_buffer"],
        ),
    )


def info_from_proto(reply: rpb.InfoResponse) -> dict[str, object]:
    limit = reply.rate_limit
    return {
        "capacity": reply.capacity,
        "size": reply.size,
        "inserted": reply.inserted,
        "sampled": reply.sampled,
        "sampler": reply.sampler,
        "alpha": reply.alpha,
        "beta": reply.beta,
        "spec": spec_from_proto(reply.spec),
        "rate_limiter": {
            "samples_per_insert": limit.samples_per_insert if limit.HasField("samples_per_insert") else None,
            "min_size_to_sample": limit.min_size_to_sample,
            "error_buffer": limit.error_buffer if limit.HasField("error_buffer") else None,
        },
    }
