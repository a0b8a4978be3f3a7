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
        self.types: list[BtfType | None] = [None]  # id 0: void
        self._by_name: dict[tuple[int, str], int] = {}
        self._parse(data, e, types_at, types_at + type_len)

    @classmethod
    def from_file(cls, path: str | Path) -> Btf:
        return cls(Path(path).read_bytes())

    def _str(self, off: int) -> str:
        end = self._strs.find(b"\0", off)
        if end < 0:
            raise BtfError(f"string offset {off} is not terminated")
        return self._strs[off:end].decode("utf-8", "replace")

    def _parse(self, data: bytes, e: str, pos: int, end: int) -> None:
        hdr = struct.Struct(e + "III")
        pair = struct.Struct(e + "II")
        triple = struct.Struct(e + "III")
        while pos < end:
            name_off, info, size_or_type = hdr.unpack_from(data, pos)
            pos += 12
            kind = (info >> 24) & 0x1F
            vlen = info & 0xFFFF
            kind_flag = bool(info >> 31)
            members: tuple[tuple[str, int, int], ...] = ()
            params: tuple[tuple[str, int], ...] = ()
            if kind in (INT, VAR, DECL_TAG):
                pos += 4
            elif kind == ARRAY:
                pos += 12
            elif kind in (STRUCT, UNION):
                ms = []
                for _ in range(vlen):
                    m_name, m_type, m_off = triple.unpack_from(data, pos)
                    pos += 12
                    bit_off = m_off & 0xFFFFFF if kind_flag else m_off
                    ms.append((self._str(m_name), m_type, bit_off))
                members = tuple(ms)
            elif kind == ENUM:
                pos += 8 * vlen
            elif kind == FUNC_PROTO:
                ps = []
                for _ in range(vlen):
                    p_name, p_type = pair.unpack_from(data, pos)
                    pos += 8
                    ps.append((self._str(p_name), p_type))
                params = tuple(ps)
            elif kind in (DATASEC, ENUM64):
                pos += 12 * vlen
            elif kind in (PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG):
                pass
            else:
                raise BtfError(f"unknown BTF kind {kind} at type id {len(self.types)}")
            name = self._str(name_off)
            tid = len(self.types)
            self.types.append(BtfType(kind, name, size_or_type, kind_flag, members, params))
            if name:
                self._by_name.setdefault((kind, name), tid)
        if pos != end:
            raise BtfError("type section does not end on a type boundary")

    # -- queries ---------------------------------------------------------------------------------

    def find(self, kind: int, name: str) -> int:
        tid = self._by_name.get((kind, name))
        if tid is None:
            raise BtfError(f"no BTF type {name!r} of kind {kind}")
        return tid

    def get(self, tid: int) -> BtfType:
        t = self.types[tid] if 0 < tid < len(self.types) else None
        if t is None:
            raise BtfError(f"no BTF type id {tid}")
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
