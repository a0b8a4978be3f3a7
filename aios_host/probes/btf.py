"""A small reader for the kernel's own BTF (/sys/kernel/btf/vmlinux): struct member offsets and
raw tracepoint prototypes of the *running* kernel, with no tool and no header.

Why: on hosts whose kernel headers are a fallback for another kernel (Debian 6.1 headers on the
6.18 dev hosts), a struct dereference compiled by bcc uses the headers' offsets, which are wrong.
The running kernel's BTF describes its real layout, so the loader reads the few offsets the raw
programs need here (task_struct.exit_code) and passes them as -D flags, and checks the raw
tracepoint argument lists (btf_trace_<name> typedefs) the programs rely on.

Format (Documentation/bpf/btf.rst): a header (magic 0xeB9F, version 1, flags, hdr_len, type_off,
type_len, str_off, str_len; offsets relative to the end of the header), a string section, and a
type section of `struct btf_type {u32 name_off; u32 info; u32 size_or_type;}` records, each
followed by kind-specific data. Type ids start at 1 (0 is void) in section order.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

BTF_MAGIC = 0xEB9F
VMLINUX_BTF = "/sys/kernel/btf/vmlinux"

# kinds (include/uapi/linux/btf.h)
INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT = range(1, 12)
FUNC, FUNC_PROTO, VAR, DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = range(12, 20)

_MODIFIERS = (TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG)


# bytes after the 12-byte btf_type record: fixed per kind, plus per vlen item (Documentation/bpf/btf.rst)
_FIXED_EXTRA = {INT: 4, VAR: 4, DECL_TAG: 4, ARRAY: 12, **{k: 0 for k in (
    STRUCT, UNION, ENUM, FUNC_PROTO, DATASEC, ENUM64, PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC,
    FLOAT, TYPE_TAG)}}
_PER_MEMBER = {STRUCT: 12, UNION: 12, ENUM: 8, FUNC_PROTO: 8, DATASEC: 12, ENUM64: 12}


class BtfError(Exception):
    """Not a BTF blob this reader understands, or the type/member asked for is not there."""


@dataclass(frozen=True)
class BtfType:
    kind: int
    name: str
    size_or_type: int  # size for INT/STRUCT/UNION/ENUM/DATASEC/FLOAT, a type id for the others
    kind_flag: bool
    members: tuple[tuple[str, int, int], ...] = ()  # STRUCT/UNION: (name, type id, bit offset)
    params: tuple[tuple[str, int], ...] = ()  # FUNC_PROTO: (name, type id)


class Btf:
    def __init__(self, data: bytes) -> None:
        if len(data) < 24:
            raise BtfError("BTF blob shorter than its header")
        if struct.unpack_from("<H", data, 0)[0] == BTF_MAGIC:
            e = "<"
        elif struct.unpack_from(">H", data, 0)[0] == BTF_MAGIC:
            e = ">"
        else:
            raise BtfError("no BTF magic 0xeB9F")
        _magic, version, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(
            e + "HBBIIIII", data, 0)
        if version != 1:
            raise BtfError(f"BTF version {version}, expected 1")
        types_at, strs_at = hdr_len + type_off, hdr_len + str_off
        if types_at + type_len > len(data) or strs_at + str_len > len(data):
            raise BtfError("BTF sections run past the end of the blob")
        self._strs = data[strs_at:strs_at + str_len]
        self._data, self._e = data, e
        # Indexed once (where each type's record starts, its kind and name), decoded on demand:
        # the kernel's BTF has ~150k types and the loader needs a handful of them.
        self._pos: list[int] = [0]  # id 0: void
        self._kind: list[int] = [0]
        self._name_off: list[int] = [0]
        self._decoded: dict[int, BtfType] = {}
        self._index(types_at, types_at + type_len)

    @classmethod
    def from_file(cls, path: str | Path) -> Btf:
        return cls(Path(path).read_bytes())

    def __len__(self) -> int:
        """Number of type ids, void (0) included."""
        return len(self._pos)

    def _str(self, off: int) -> str:
        end = self._strs.find(b"\0", off)
        if end < 0:
            raise BtfError(f"string offset {off} is not terminated")
        return self._strs[off:end].decode("utf-8", "replace")

    def _index(self, pos: int, end: int) -> None:
        unpack = struct.Struct(self._e + "III").unpack_from
        data, positions, kinds, names = self._data, self._pos, self._kind, self._name_off
        while pos < end:
            name_off, info, _ = unpack(data, pos)
            kind = (info >> 24) & 0x1F
            fixed = _FIXED_EXTRA.get(kind)
            if fixed is None:
                raise BtfError(f"unknown BTF kind {kind} at type id {len(positions)}")
            positions.append(pos)
            kinds.append(kind)
            names.append(name_off)
            pos += 12 + fixed + _PER_MEMBER.get(kind, 0) * (info & 0xFFFF)
        if pos != end:
            raise BtfError("type section does not end on a type boundary")

    def _decode(self, tid: int) -> BtfType:
        e, data, pos = self._e, self._data, self._pos[tid]
        name_off, info, size_or_type = struct.unpack_from(e + "III", data, pos)
        pos += 12
        kind, vlen, kind_flag = (info >> 24) & 0x1F, info & 0xFFFF, bool(info >> 31)
        members: tuple[tuple[str, int, int], ...] = ()
        params: tuple[tuple[str, int], ...] = ()
        if kind in (STRUCT, UNION):
            ms = []
            for m_name, m_type, m_off in struct.iter_unpack(e + "III", data[pos:pos + 12 * vlen]):
                ms.append((self._str(m_name), m_type, m_off & 0xFFFFFF if kind_flag else m_off))
            members = tuple(ms)
        elif kind == FUNC_PROTO:
            params = tuple((self._str(p_name), p_type)
                           for p_name, p_type in struct.iter_unpack(e + "II", data[pos:pos + 8 * vlen]))
        return BtfType(kind, self._str(name_off), size_or_type, kind_flag, members, params)

    # -- queries ---------------------------------------------------------------------------------

    def find(self, kind: int, name: str) -> int:
        """The first type id of `kind` named `name`."""
        key = b"\0" + name.encode() + b"\0"
        at = self._strs.find(key)
        while at >= 0:  # kernel BTF has each string once; a non-deduplicated blob may repeat it
            off, tid = at + 1, 0
            try:
                while True:
                    tid = self._name_off.index(off, tid + 1)
                    if self._kind[tid] == kind:
                        return tid
            except ValueError:
                pass
            at = self._strs.find(key, at + 1)
        raise BtfError(f"no BTF type {name!r} of kind {kind}")

    def get(self, tid: int) -> BtfType:
        if not 0 < tid < len(self._pos):
            raise BtfError(f"no BTF type id {tid}")
        t = self._decoded.get(tid)
        if t is None:
            t = self._decoded[tid] = self._decode(tid)
        return t

    def member_bit_offset(self, struct_name: str, member: str) -> int:
        """Bit offset of `member` in struct `struct_name`, looking through anonymous struct/union
        members (the kernel nests many task_struct fields in them)."""
        found = self._member_in(self.find(STRUCT, struct_name), member, 0)
        if found is None:
            raise BtfError(f"struct {struct_name} has no member {member!r}")
        return found

    def member_offset(self, struct_name: str, member: str) -> int:
        """Byte offset of a (non-bitfield) member."""
        bits = self.member_bit_offset(struct_name, member)
        if bits % 8:
            raise BtfError(f"{struct_name}.{member} is a bitfield (bit offset {bits})")
        return bits // 8

    def _member_in(self, tid: int, member: str, base: int) -> int | None:
        t = self.get(tid)
        for m_name, _m_type, bit_off in t.members:
            if m_name == member:
                return base + bit_off
        for m_name, m_type, bit_off in t.members:
            if m_name:
                continue
            inner = self._skip_modifiers(m_type)
            if self.get(inner).kind in (STRUCT, UNION):
                found = self._member_in(inner, member, base + bit_off)
                if found is not None:
                    return found
        return None

    def _skip_modifiers(self, tid: int) -> int:
        while tid and self.get(tid).kind in _MODIFIERS:
            tid = self.get(tid).size_or_type
        return tid

    def type_name(self, tid: int) -> str:
        """A C-ish spelling of a type: "struct task_struct *", "unsigned int", "bool", "void *"."""
        if tid == 0:
            return "void"
        t = self.get(tid)
        if t.kind == PTR:
            return self.type_name(t.size_or_type) + " *"
        if t.kind in (CONST, VOLATILE, RESTRICT, TYPE_TAG):
            return self.type_name(t.size_or_type)
        if t.kind in (STRUCT, UNION):
            return ("struct " if t.kind == STRUCT else "union ") + t.name
        if t.kind == ENUM or t.kind == ENUM64:
            return "enum " + t.name
        return t.name

    def raw_tracepoint_params(self, name: str) -> list[str]:
        """The argument types a raw tracepoint program sees in ctx->args[], from the kernel's
        `btf_trace_<name>` typedef (a pointer to a prototype whose first parameter is the probe's
        `void *__data`, which raw programs do not get)."""
        tid = self._skip_modifiers(self.find(TYPEDEF, f"btf_trace_{name}"))
        ptr = self.get(tid)
        if ptr.kind != PTR:
            raise BtfError(f"btf_trace_{name} is not a function pointer")
        proto = self.get(ptr.size_or_type)
        if proto.kind != FUNC_PROTO or not proto.params:
            raise BtfError(f"btf_trace_{name} is not a function pointer")
        return [self.type_name(t) for _, t in proto.params[1:]]
