from . import batch_pb2 as _batch_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Field(_message.Message):
    __slots__ = ("name", "tensor")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    name: str
    tensor: _batch_pb2.Tensor
    def __init__(self, name: _Optional[str] = ..., tensor: _Optional[_Union[_batch_pb2.Tensor, _Mapping]] = ...) -> None: ...

class FieldSpec(_message.Message):
    __slots__ = ("name", "dtype", "shape")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class InsertRequest(_message.Message):
    __slots__ = ("fields", "priorities")
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    PRIORITIES_FIELD_NUMBER: _ClassVar[int]
    fields: _containers.RepeatedCompositeFieldContainer[Field]
    priorities: _batch_pb2.Tensor
    def __init__(self, fields: _Optional[_Iterable[_Union[Field, _Mapping]]] = ..., priorities: _Optional[_Union[_batch_pb2.Tensor, _Mapping]] = ...) -> None: ...

class InsertResponse(_message.Message):
    __slots__ = ("keys", "size")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    keys: _batch_pb2.Tensor
    size: int
    def __init__(self, keys: _Optional[_Union[_batch_pb2.Tensor, _Mapping]] = ..., size: _Optional[int] = ...) -> None: ...

class SampleRequest(_message.Message):
    __slots__ = ("batch_size", "beta")
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    BETA_FIELD_NUMBER: _ClassVar[int]
    batch_size: int
    beta: float
    def __init__(self, batch_size: _Optional[int] = ..., beta: _Optional[float] = ...) -> None: ...

class SampleResponse(_message.Message):
    __slots__ = ("fields", "keys", "probabilities", "weights")
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    fields: _containers.RepeatedCompositeFieldContainer[Field]
    keys: _batch_pb2.Tensor
    probabilities: _batch_pb2.Tensor
    weights: _batch_pb2.Tensor
    def __init__(self, fields: _Optional[_Iterable[_Union[Field, _Mapping]]] = ..., keys: _Optional[_Union[_batch_pb2.Tensor, _Mapping]] = ..., probabilities: _Optional[_Union[_batch_pb2.Tensor, _Mapping]] = ..., weights: _Optional[_Union[_batch_pb2.Tensor, _Mapping]] = ...) -> None: ...

class UpdatePrioritiesRequest(_message.Message):
    __slots__ = ("keys", "priorities")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    PRIORITIES_FIELD_NUMBER: _ClassVar[int]
    keys: _batch_pb2.Tensor
    priorities: _batch_pb2.Tensor
    def __init__(self, keys: _Optional[_Union[_batch_pb2.Tensor, _Mapping]] = ..., priorities: _Optional[_Union[_batch_pb2.Tensor, _Mapping]] = ...) -> None: ...

class UpdatePrioritiesResponse(_message.Message):
    __slots__ = ("updated", "stale")
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    updated: int
    stale: int
    def __init__(self, updated: _Optional[int] = ..., stale: _Optional[int] = ...) -> None: ...

class InfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RateLimit(_message.Message):
    __slots__ = ("samples_per_insert", "min_size_to_sample", "error_buffer")
    SAMPLES_PER_INSERT_FIELD_NUMBER: _ClassVar[int]
    MIN_SIZE_TO_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    ERROR_BUFFER_FIELD_NUMBER: _ClassVar[int]
    samples_per_insert: float
    min_size_to_sample: int
    error_buffer: float
    def __init__(self, samples_per_insert: _Optional[float] = ..., min_size_to_sample: _Optional[int] = ..., error_buffer: _Optional[float] = ...) -> None: ...

class InfoResponse(_message.Message):
    __slots__ = ("capacity", "size", "inserted", "sampled", "sampler", "alpha", "beta", "spec", "rate_limit")
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    INSERTED_FIELD_NUMBER: _ClassVar[int]
    SAMPLED_FIELD_NUMBER: _ClassVar[int]
    SAMPLER_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    BETA_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMIT_FIELD_NUMBER: _ClassVar[int]
    capacity: int
    size: int
    inserted: int
    sampled: int
    sampler: str
    alpha: float
    beta: float
    spec: _containers.RepeatedCompositeFieldContainer[FieldSpec]
    rate_limit: RateLimit
    def __init__(self, capacity: _Optional[int] = ..., size: _Optional[int] = ..., inserted: _Optional[int] = ..., sampled: _Optional[int] = ..., sampler: _Optional[str] = ..., alpha: _Optional[float] = ..., beta: _Optional[float] = ..., spec: _Optional[_Iterable[_Union[FieldSpec, _Mapping]]] = ..., rate_limit: _Optional[_Union[RateLimit, _Mapping]] = ...) -> None: ...
