"""JWS for ACME (RFC 8555 section 6.2, RFC 7515/7518/8037/7638) on the ``cryptography`` package.

Both sides live here: the driver signs with :class:`AccountKey`, the stand-in verifies with
:func:`verify`. certctl accepts RS256, ES256 and EdDSA only; ES256 signatures are the raw
``r || s`` concatenation (64 bytes), never DER.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

ALLOWED_ALGS = ("RS256", "ES256", "EdDSA")


class JWSError(ValueError):
    """A JWS that must be refused; ``kind`` is the ACME problem type suffix (e.g. badNonce)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64u_decode(text: str) -> bytes:
    if not isinstance(text, str) or "=" in text:
        raise JWSError("malformed", "base64url field is not a padless string")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError):
        raise JWSError("malformed", "invalid base64url") from None


def _int_b64(value: int, length: int | None = None) -> str:
    length = length or (value.bit_length() + 7) // 8
    return b64u(value.to_bytes(length, "big"))


def public_jwk(key) -> dict:
    """The public JWK of a private or public key, members in RFC 7638 order."""
    pub = key.public_key() if hasattr(key, "public_key") else key
    if isinstance(pub, ec.EllipticCurvePublicKey):
        if not isinstance(pub.curve, ec.SECP256R1):
            raise ValueError("only P-256 EC keys are supported (ES256)")
        nums = pub.public_numbers()
        return {"crv": "P-256", "kty": "EC", "x": _int_b64(nums.x, 32), "y": _int_b64(nums.y, 32)}
    if isinstance(pub, rsa.RSAPublicKey):
        nums = pub.public_numbers()
        return {"e": _int_b64(nums.e), "kty": "RSA", "n": _int_b64(nums.n)}
    if isinstance(pub, ed25519.Ed25519PublicKey):
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        raw = pub.public_bytes(Encoding.Raw, PublicFormat.Raw)
        return {"crv": "Ed25519", "kty": "OKP", "x": b64u(raw)}
    raise ValueError(f"unsupported key type {type(pub).__name__}")


def thumbprint(jwk: dict) -> str:
    """RFC 7638 SHA-256 thumbprint, base64url without padding."""
    required = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n"),
                "OKP": ("crv", "kty", "x")}.get(jwk.get("kty"))
    if required is None or any(not isinstance(jwk.get(k), str) for k in required):
        raise JWSError("malformed", "jwk lacks the members its key type needs")
    canonical = json.dumps({k: jwk[k] for k in required}, separators=(",", ":"), sort_keys=True)
    return b64u(hashlib.sha256(canonical.encode()).digest())


def key_from_jwk(jwk: dict):
    kty = jwk.get("kty")
    try:
        if kty == "EC" and jwk.get("crv") == "P-256":
            x, y = (int.from_bytes(b64u_decode(jwk[k]), "big") for k in ("x", "y"))
            return ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
        if kty == "RSA":
            n, e = (int.from_bytes(b64u_decode(jwk[k]), "big") for k in ("n", "e"))
            return rsa.RSAPublicNumbers(e, n).public_key()
        if kty == "OKP" and jwk.get("crv") == "Ed25519":
            return ed25519.Ed25519PublicKey.from_public_bytes(b64u_decode(jwk["x"]))
    except (KeyError, ValueError):
        raise JWSError("malformed", "jwk is not a valid public key") from None
    raise JWSError("badPublicKey", f"unsupported jwk kty={kty!r} crv={jwk.get('crv')!r}")


@dataclass
class AccountKey:
    """An ACME account key; ``alg`` is RS256, ES256 or EdDSA."""

    alg: str
    private: object

    @classmethod
    def generate(cls, alg: str = "ES256") -> AccountKey:
        if alg == "ES256":
            return cls(alg, ec.generate_private_key(ec.SECP256R1()))
        if alg == "RS256":
            return cls(alg, rsa.generate_private_key(public_exponent=65537, key_size=2048))
        if alg == "EdDSA":
            return cls(alg, ed25519.Ed25519PrivateKey.generate())
        raise ValueError(f"unsupported algorithm {alg!r}; use one of {', '.join(ALLOWED_ALGS)}")

    @property
    def jwk(self) -> dict:
        return public_jwk(self.private)

    @property
    def thumbprint(self) -> str:
        return thumbprint(self.jwk)

    def sign_bytes(self, data: bytes) -> bytes:
        key = self.private
        if self.alg == "ES256":
            r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")
        if self.alg == "RS256":
            return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        return key.sign(data)

    def sign(self, url: str, nonce: str, payload: dict | None, kid: str | None = None) -> bytes:
        """A flattened JWS JSON body; ``payload=None`` is POST-as-GET (empty payload)."""
        protected = {"alg": self.alg, "nonce": nonce, "url": url}
        if kid:
            protected["kid"] = kid
        else:
            protected["jwk"] = self.jwk
        p64 = b64u(json.dumps(protected, separators=(",", ":")).encode())
        body64 = "" if payload is None else b64u(json.dumps(payload, separators=(",", ":"))
                                                 .encode())
        sig = self.sign_bytes(f"{p64}.{body64}".encode())
        return json.dumps({"protected": p64, "payload": body64, "signature": b64u(sig)},
                          separators=(",", ":")).encode()


@dataclass(frozen=True)
class ParsedJWS:
    protected: dict
    payload: dict | None  # None for POST-as-GET
    signing_input: bytes
    signature: bytes


def parse(body: bytes) -> ParsedJWS:
    """Decode a flattened JWS; structural problems raise JWSError("malformed")."""
    try:
        outer = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise JWSError("malformed", "request body is not JSON") from None
    if not isinstance(outer, dict) or not all(isinstance(outer.get(k), str)
                                              for k in ("protected", "payload", "signature")):
        raise JWSError("malformed", "body must be a flattened JWS")
    try:
        protected = json.loads(b64u_decode(outer["protected"]))
        payload = json.loads(b64u_decode(outer["payload"])) if outer["payload"] else None
    except (ValueError, UnicodeDecodeError):
        raise JWSError("malformed", "protected header or payload is not JSON") from None
    if not isinstance(protected, dict):
        raise JWSError("malformed", "protected header must be an object")
    return ParsedJWS(protected, payload, f"{outer['protected']}.{outer['payload']}".encode(),
                     b64u_decode(outer["signature"]))


def verify_signature(jws: ParsedJWS, public_key) -> None:
    """Check the signature with the key; the algorithm must match the key type."""
    alg = jws.protected.get("alg")
    if alg not in ALLOWED_ALGS:
        # certctl's parser rejects other algorithms outright: 400 malformed "malformed JWS"
        raise JWSError("malformed", f"malformed JWS: algorithm {alg!r} is not one of "
                                    f"{', '.join(ALLOWED_ALGS)}")
    try:
        if alg == "ES256" and isinstance(public_key, ec.EllipticCurvePublicKey):
            if len(jws.signature) != 64:  # a DER signature fails here, as in go-jose
                raise JWSError("unauthorized", "signature did not verify: not 64-byte r || s")
            r = int.from_bytes(jws.signature[:32], "big")
            s = int.from_bytes(jws.signature[32:], "big")
            public_key.verify(encode_dss_signature(r, s), jws.signing_input,
                              ec.ECDSA(hashes.SHA256()))
        elif alg == "RS256" and isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(jws.signature, jws.signing_input, padding.PKCS1v15(),
                              hashes.SHA256())
        elif alg == "EdDSA" and isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(jws.signature, jws.signing_input)
        else:
            raise JWSError("unauthorized", f"signature did not verify: {alg} does not fit the key")
    except InvalidSignature:
        raise JWSError("unauthorized", "signature did not verify") from None
