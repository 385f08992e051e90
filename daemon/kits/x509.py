"""The validity period of a DER-encoded X.509 certificate, read with the standard library only.

Python's ssl module gives a peer's certificate as a dict only after verifying it; an endpoint whose
certificate is expired or self-signed fails verification, and that is exactly when its dates matter. So
the DER bytes (``getpeercert(binary_form=True)``) are walked here: Certificate ::= SEQUENCE {
tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber, signature, issuer, validity SEQUENCE {
notBefore, notAfter }, ... }, ... } (RFC 5280 §4.1), times as UTCTime or GeneralizedTime.
"""

from __future__ import annotations

import datetime as dt


class CertificateError(ValueError):
    """The bytes are not a certificate this reader understands."""


def _read(der: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of content, end of content) of the element at ``pos``."""
    if pos + 2 > len(der):
        raise CertificateError("truncated DER")
    tag, length = der[pos], der[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        if n == 0 or n > 4 or pos + n > len(der):
            raise CertificateError("unsupported DER length")
        length = int.from_bytes(der[pos : pos + n], "big")
        pos += n
    if pos + length > len(der):
        raise CertificateError("truncated DER")
    return tag, pos, pos + length


def _time(tag: int, raw: bytes) -> float:
    text = raw.decode("ascii")
    if tag == 0x17:  # UTCTime YYMMDDHHMMSSZ; years 50-99 are 19xx (RFC 5280 §4.1.2.5.1)
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
    elif tag != 0x18:
        raise CertificateError(f"unexpected time tag {tag:#x}")
    when = dt.datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=dt.UTC)
    return when.timestamp()


def validity(der: bytes) -> tuple[float, float]:
    """(notBefore, notAfter) as Unix seconds. Raises CertificateError."""
    try:
        _, cert, _ = _read(der, 0)
        _, tbs, tbs_end = _read(der, cert)
        pos = tbs
        tag, _, end = _read(der, pos)
        if tag == 0xA0:  # explicit [0] version
            pos = end
        for _ in range(3):  # serialNumber, signature, issuer
            _, _, pos = _read(der, pos)
        tag, start, end = _read(der, pos)
        if tag != 0x30 or end > tbs_end:
            raise CertificateError("no validity sequence")
        t1, s1, e1 = _read(der, start)
        t2, s2, e2 = _read(der, e1)
        return _time(t1, der[s1:e1]), _time(t2, der[s2:e2])
    except (UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, CertificateError):
            raise
        raise CertificateError(f"unreadable certificate time: {exc}") from None
