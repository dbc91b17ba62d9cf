"""Safe reading and byte-exact rewriting of the zip archives that .docx, .pptx and .epub files are.

Reading (``SafeZip(document, data)``) refuses, with a ``DocumentError`` naming the document and the
problem, before any member is decompressed:

- bytes that are not a zip archive, or whose central directory disagrees with its local headers;
- an encrypted member; a member name that is absolute (``/x``, ``C:\\x``), climbs out (``../x``), holds a
  backslash, a NUL or an empty path segment; two members with the same name;
- more than ``Limits.members`` members; a member whose declared size exceeds ``Limits.member_bytes``,
  a total over ``Limits.total_bytes``, or a compression ratio over ``Limits.ratio`` (zip bombs);
  members whose data overlap (the overlapping-file zip bomb).

``read(name)`` then decompresses with a cap, so a header that lies about the size is caught too (and
Python's zipfile checks the CRC).  Nested archives are not opened, so nested-zip bombs are not a concern.

Rewriting (``rewrite(replacements)``) copies every member not replaced byte for byte: its local header,
compressed data and data descriptor are copied verbatim from the original offsets, in the original order,
and its central-directory record is copied with only the offset field changed, so ``unzip -l``, ``zipinfo``
and Python's zipfile agree and an EPUB's ``mimetype`` stays first and stored.  A replaced member keeps its
header fields (name, time, extra field, attributes) and its method (stored stays stored, anything else is
deflated) with new CRC and sizes.  The result is opened again and checked before it is returned.

    python -m captioner.documents.zipfiles FILE.docx     # lists the members, as the checks see them
"""
from __future__ import annotations

import struct
import sys
import zipfile
import zlib
from dataclasses import dataclass

from captioner.documents.formats import DocumentError

_LOCAL = b"PK\x03\x04"
_CENTRAL = b"PK\x01\x02"
_END = b"PK\x05\x06"
_DESCRIPTOR = b"PK\x07\x08"
_LOCAL_FIXED, _CENTRAL_FIXED, _END_FIXED = 30, 46, 22
_ZIP64_MARK = 0xFFFFFFFF


@dataclass(frozen=True)
class Limits:
    """How much an archive may hold before it is refused as a zip bomb (generous for real documents:
    a 300-slide deck with photos is ~200 MB; XML compresses ~10-50x, PNG/JPEG hardly at all, while
    deflate's ceiling, which a one-layer bomb reaches, is ~1030x; only a large, nearly blank
    uncompressed bitmap would exceed the ratio honestly)."""
    members: int = 20_000
    member_bytes: int = 256 * 1024 * 1024
    total_bytes: int = 1024 * 1024 * 1024
    ratio: int = 500
    ratio_floor: int = 1024 * 1024      # small members may compress absurdly well (a blank XML part)


@dataclass
class Member:
    """One member as both directories describe it, and where its raw bytes lie in the archive."""
    name: str
    info: zipfile.ZipInfo
    central: bytes          # its central-directory record, verbatim
    start: int              # offset of its local header
    end: int                # end of its compressed data (and data descriptor)


def _check_name(document: str, name: str) -> None:
    bad = None
    if not name:
        bad = "an empty member name"
    elif "\\" in name:
        bad = "a backslash in a member name"
    elif "\x00" in name:
        bad = "a NUL character in a member name"
    elif name.startswith("/"):
        bad = "an absolute member name"
    elif len(name) >= 2 and name[1] == ":" and name[0].isalpha():
        bad = "a member name with a drive letter"
    else:
        parts = name.rstrip("/").split("/")
        if any(p == ".." for p in parts):
            bad = "a member name that climbs out of the archive (..)"
        elif any(p in ("", ".") for p in parts):
            bad = "a member name with an empty or '.' path segment"
    if bad:
        raise DocumentError(document, f"{bad}: {name!r} (refused as a path-traversal attempt)")


def _end_record(document: str, data: bytes) -> tuple[int, int, int, int, int]:
    """(end-record offset, entries, central-directory size and offset, comment length) of a plain zip."""
    pos = data.rfind(_END, max(0, len(data) - _END_FIXED - 0xFFFF))
    if pos < 0 or pos + _END_FIXED > len(data):
        raise DocumentError(document, "not a zip archive (no end-of-central-directory record)")
    _, disk, cd_disk, n_disk, n_total, cd_size, cd_offset, comment = struct.unpack("<4sHHHHIIH",
                                                                           data[pos:pos + _END_FIXED])
    if disk or cd_disk or n_disk != n_total:
        raise DocumentError(document, "a multi-volume zip archive (not supported)")
    return pos, n_total, cd_size, cd_offset, comment


class SafeZip:
    """A zip archive given as bytes, checked as the module docstring says before anything is read."""

    def __init__(self, document: str, data: bytes, limits: Limits = Limits()):
        self.document, self.data, self.limits = str(document), data, limits
        if not data.startswith(_LOCAL) and not data.startswith(_END):
            raise DocumentError(self.document, "not a zip archive (a .docx, .pptx or .epub file is one)")
        try:
            self._zip = zipfile.ZipFile(_Reader(data))
        except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, ValueError, OSError, EOFError,
                struct.error, UnicodeDecodeError) as exc:
            raise DocumentError(self.document, f"not a readable zip archive ({exc})") from None
        infos = self._zip.infolist()
        if len(infos) > limits.members:
            raise DocumentError(self.document, f"{len(infos)} members, more than the {limits.members} allowed "
                                               "(refused as a possible zip bomb)")
        self.members: list[Member] = []
        self._by_name: dict[str, Member] = {}
        total = 0
        centrals = self._central_records(len(infos))
        for info, central in zip(infos, centrals):
            name = info.filename
            _check_name(self.document, info.orig_filename)
            if name in self._by_name:
                raise DocumentError(self.document, f"two members named {name!r} (refused: which one is read "
                                                   "depends on the reader)")
            if info.flag_bits & 0x41:
                raise DocumentError(self.document, f"member {name!r} is encrypted (an encrypted document cannot "
                                                   "be read; save it without a password)")
            size, packed = info.file_size, info.compress_size
            if size > limits.member_bytes:
                raise DocumentError(self.document, f"member {name!r} declares {size} bytes, more than the "
                                                   f"{limits.member_bytes} allowed (refused as a zip bomb)")
            if size > limits.ratio_floor and size > limits.ratio * max(packed, 1):
                raise DocumentError(self.document, f"member {name!r} expands {size / max(packed, 1):.0f} times "
                                                   "(refused as a zip bomb)")
            total += size
            member = Member(name, info, central, info.header_offset, self._member_end(info))
            self.members.append(member)
            self._by_name[name] = member
        if total > limits.total_bytes:
            raise DocumentError(self.document, f"members declare {total} bytes in all, more than the "
                                               f"{limits.total_bytes} allowed (refused as a zip bomb)")
        ordered = sorted(self.members, key=lambda m: m.start)
        for a, b in zip(ordered, ordered[1:]):
            if a.end > b.start:
                raise DocumentError(self.document, f"members {a.name!r} and {b.name!r} overlap "
                                                   "(refused as a zip bomb)")

    # -- the two directories -------------------------------------------------------------------------
    def _central_records(self, count: int) -> list[bytes]:
        """The raw central-directory records, in order (None each for zip64 archives: read-only)."""
        pos, n_total, cd_size, cd_offset, comment = _end_record(self.document, self.data)
        self._prefix, self._comment = 0, b""
        if n_total == 0xFFFF or cd_offset == _ZIP64_MARK or cd_size == _ZIP64_MARK:
            return [b""] * count      # zip64: readable through zipfile, never rewritten
        start = pos - cd_size
        if start < 0:
            raise DocumentError(self.document, "a damaged zip archive (central directory out of range)")
        records, at = [], start
        for _ in range(n_total):
            if self.data[at:at + 4] != _CENTRAL or at + _CENTRAL_FIXED > pos:
                raise DocumentError(self.document, "a damaged zip archive (bad central-directory record)")
            n, m, k = struct.unpack("<HHH", self.data[at + 28:at + 34])
            end = at + _CENTRAL_FIXED + n + m + k
            records.append(self.data[at:end])
            at = end
        if len(records) != count:
            raise DocumentError(self.document, "a damaged zip archive (its directories disagree on the members)")
        self._prefix = start - cd_offset      # bytes before the archive proper (a self-extractor stub)
        self._comment = self.data[pos + _END_FIXED - 2:pos + _END_FIXED + comment]
        return records

    def _member_end(self, info: zipfile.ZipInfo) -> int:
        at = info.header_offset
        head = self.data[at:at + _LOCAL_FIXED]
        if len(head) < _LOCAL_FIXED or head[:4] != _LOCAL:
            raise DocumentError(self.document, f"member {info.filename!r} has no local header where the "
                                               "directory says (a damaged zip archive)")
        n, m = struct.unpack("<HH", head[26:30])
        local_name = self.data[at + _LOCAL_FIXED:at + _LOCAL_FIXED + n]
        central_name = info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437")
        if local_name != central_name:
            raise DocumentError(self.document, f"member {info.filename!r} has another name in its local header "
                                               "(refused: readers would disagree on it)")
        end = at + _LOCAL_FIXED + n + m + info.compress_size
        if info.flag_bits & 0x08:   # sizes follow the data in a descriptor, with or without its signature
            zip64 = info.file_size >= _ZIP64_MARK or info.compress_size >= _ZIP64_MARK
            end += (8 if zip64 else 0) + (16 if self.data[end:end + 4] == _DESCRIPTOR else 12)
        if end > len(self.data):
            raise DocumentError(self.document, f"member {info.filename!r} runs past the end of the archive "
                                               "(a truncated zip archive)")
        return end

    # -- reading -------------------------------------------------------------------------------------
    def names(self) -> list[str]:
        return [m.name for m in self.members]

    def __contains__(self, name: str) -> bool:
        return name in self._by_name

    def info(self, name: str) -> zipfile.ZipInfo:
        return self._member(name).info

    def _member(self, name: str) -> Member:
        try:
            return self._by_name[name]
        except KeyError:
            raise DocumentError(self.document, f"no member {name!r} in the archive") from None

    def read(self, name: str) -> bytes:
        """The member's bytes, decompressed with a cap at its declared size (a lying header is refused)."""
        member = self._member(name)
        cap = member.info.file_size
        try:
            with self._zip.open(member.info) as f:
                out = f.read(cap + 1)
                if len(out) > cap or f.read(1):
                    raise DocumentError(self.document, f"member {name!r} holds more than the size it declares "
                                                       "(refused as a zip bomb)")
        except DocumentError:
            raise
        except (zipfile.BadZipFile, NotImplementedError, zlib.error, EOFError, OSError, ValueError,
                RuntimeError) as exc:
            raise DocumentError(self.document, f"member {name!r} cannot be read ({exc}: a damaged archive, or "
                                               "headers that lie about the member)") from None
        if len(out) != cap:
            raise DocumentError(self.document, f"member {name!r} holds {len(out)} bytes, not the {cap} it "
                                               "declares (a damaged zip archive)")
        return out

    def raw(self, name: str) -> bytes:
        """The member's record as it lies in the archive: local header, compressed data, data descriptor."""
        member = self._member(name)
        return self.data[member.start:member.end]

    # -- rewriting -----------------------------------------------------------------------------------
    def rewrite(self, replacements: dict[str, bytes]) -> bytes:
        """This archive with the named members' contents replaced and every other member copied verbatim."""
        unknown = [n for n in replacements if n not in self._by_name]
        if unknown:
            raise DocumentError(self.document, f"no member {unknown[0]!r} to replace")
        if any(not m.central for m in self.members) or self._prefix:
            raise DocumentError(self.document, "a zip64 or prefixed zip archive (read, but not rewritten)")
        out = bytearray()
        centrals = []
        for member in sorted(self.members, key=lambda m: m.start):
            offset = len(out)
            if member.name in replacements:
                local, central = self._replaced(member, replacements[member.name])
                out += local
            else:
                out += self.data[member.start:member.end]
                central = member.central
            centrals.append((member, central[:42] + struct.pack("<I", offset) + central[46:]))
        by_central = {id(m): c for m, c in centrals}
        cd_offset = len(out)
        for member in self.members:   # central-directory order kept as it was
            out += by_central[id(member)]
        cd_size = len(out) - cd_offset
        n = len(self.members)
        out += _END + struct.pack("<HHHHII", 0, 0, n, n, cd_size, cd_offset) + self._comment
        result = bytes(out)
        self._verify(result, replacements)
        return result

    def _replaced(self, member: Member, content: bytes) -> tuple[bytes, bytes]:
        """The new local record (header + data) and central record of a replaced member."""
        head = self.data[member.start:member.start + _LOCAL_FIXED]
        n, m = struct.unpack("<HH", head[26:30])
        name_extra = self.data[member.start + _LOCAL_FIXED:member.start + _LOCAL_FIXED + n + m]
        method = member.info.compress_type
        if method == zipfile.ZIP_STORED:
            packed = content
        else:
            method = zipfile.ZIP_DEFLATED
            packer = zlib.compressobj(6, zlib.DEFLATED, -15)
            packed = packer.compress(content) + packer.flush()
        crc = zlib.crc32(content)
        if len(packed) >= _ZIP64_MARK or len(content) >= _ZIP64_MARK:
            raise DocumentError(self.document, f"member {member.name!r} would need zip64 (not written)")
        flags = member.info.flag_bits & ~0x08          # sizes now in the header: no data descriptor
        version = max(struct.unpack("<H", head[4:6])[0], 20 if method == zipfile.ZIP_DEFLATED else 10)
        fields = struct.pack("<HHH", version, flags, method)
        sizes = struct.pack("<III", crc, len(packed), len(content))
        local = _LOCAL + fields + head[10:14] + sizes + head[26:30] + name_extra + packed
        c = member.central
        central = c[:6] + fields + c[12:16] + sizes + c[28:]
        return local, central

    def _verify(self, result: bytes, replacements: dict[str, bytes]) -> None:
        """Open the rewritten archive as a reader would and check every member is what it should be."""
        try:
            again = SafeZip(self.document, result, self.limits)
        except DocumentError as exc:
            raise DocumentError(self.document, f"the rewritten archive does not read back ({exc.problem})") from None
        if again.names() != self.names():
            raise DocumentError(self.document, "the rewritten archive lists other members (not written)")
        for name in self.names():
            if name in replacements:
                if again.read(name) != replacements[name]:
                    raise DocumentError(self.document, f"member {name!r} does not read back (not written)")
            elif again.raw(name) != self.raw(name):
                raise DocumentError(self.document, f"member {name!r} changed in the rewrite (not written)")


class EmbeddedPictures:
    """``image_bytes`` for the zip formats (.docx, .pptx, .epub): a picture inside the package, read with
    the checks above.  The archive is opened and checked once per document, not once per picture (a
    format object serves one document: ``formats.format_for``); before, a book of 300 photos was checked
    300 times, each time over all its members."""

    _archive: SafeZip | None = None

    def image_bytes(self, path: str, data: bytes, member: str) -> bytes:
        """The bytes of an embedded picture (``ImageRef.embedded``)."""
        if self._archive is None or self._archive.data is not data or self._archive.document != str(path):
            self._archive = SafeZip(str(path), data)
        return self._archive.read(member)


class _Reader:
    """A seekable read-only view of bytes for zipfile (BytesIO would copy them)."""

    def __init__(self, data: bytes):
        self._view, self._pos = memoryview(data), 0

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = (0, self._pos, len(self._view))[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def read(self, n: int = -1) -> bytes:
        end = len(self._view) if n is None or n < 0 else min(len(self._view), self._pos + n)
        out = bytes(self._view[self._pos:end])
        self._pos = end
        return out


if __name__ == "__main__":
    try:
        for arg in sys.argv[1:]:
            with open(arg, "rb") as fh:
                archive = SafeZip(arg, fh.read())
            for mem in archive.members:
                print(f"{mem.start:>9} {mem.info.compress_type:>2} {mem.info.compress_size:>9} "
                      f"{mem.info.file_size:>9} {mem.name}")
    except DocumentError as err:
        sys.exit(f"captioner: {err}")
