from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class HandOverRequest(_message.Message):
    __slots__ = ("key_hashes",)
    KEY_HASHES_FIELD_NUMBER: _ClassVar[int]
    key_hashes: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, key_hashes: _Optional[_Iterable[int]] = ...) -> None: ...

class AdoptRequest(_message.Message):
    __slots__ = ("owner", "key_hashes")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    KEY_HASHES_FIELD_NUMBER: _ClassVar[int]
    owner: str
    key_hashes: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, owner: _Optional[str] = ..., key_hashes: _Optional[_Iterable[int]] = ...) -> None: ...

class MovedGames(_message.Message):
    __slots__ = ("games",)
    GAMES_FIELD_NUMBER: _ClassVar[int]
    games: int
    def __init__(self, games: _Optional[int] = ...) -> None: ...
